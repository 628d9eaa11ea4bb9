"""Local images: build them from a Dockerfile, keep them in a registry, serve and fetch them.

- :mod:`~golem_api.images.dockerfile`: the Dockerfile subset the builder honours, parsed with line numbers;
- :mod:`~golem_api.images.builder`: ``golem-api image build``: steps run in the local sandbox;
- :mod:`~golem_api.images.format`: the image file (a GVMI layout with a tar payload) and its SHA3-224 hash;
- :mod:`~golem_api.images.registry`: the local store of image files by hash and tag;
- :mod:`~golem_api.images.serve`: the registry API the local node serves (``/v1/image/info``, downloads);
- :mod:`~golem_api.images.cache`: the providers' side: download, verify, unpack, once per hash;
- :mod:`~golem_api.images.resolve`: the requestor's side: a ``vm.repo`` payload's image → task package.
"""

__all__: list[str] = []
