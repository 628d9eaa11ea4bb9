"""Local images: build them from a Dockerfile, keep them in a registry, serve and fetch them.

- :mod:`~golem_local.images.dockerfile`: the Dockerfile subset the builder honours, parsed with line numbers;
- :mod:`~golem_local.images.builder`: ``golem-api image build``: steps run in the local sandbox;
- :mod:`~golem_local.images.format`: the image file (a GVMI layout with a tar payload) and its SHA3-224 hash;
- :mod:`~golem_local.images.registry`: the local store of image files by hash and tag;
- :mod:`~golem_local.images.serve`: the registry API the local node serves (``/v1/image/info``, downloads);
- :mod:`~golem_local.images.cache`: the providers' side: download, verify, unpack, once per hash;
- :mod:`~golem_api._images`: the requestor's side: a ``vm.repo`` payload's image → task package.
"""

__all__: list[str] = []
