"""Images: GVMI files built from a Dockerfile, kept in a registry, served and fetched.

- :mod:`~golem_local.images.format`: the GVMI file (a squashfs of the whole root file system + its container
  config) and its SHA3-224 hash; writing, checking, unpacking;
- :mod:`~golem_local.images.dockerfile`: the Dockerfile subset the own interpreter honours, parsed with line numbers;
- :mod:`~golem_local.images.bases`: ``debian:*`` and ``python:*`` bases made from Debian's packages (mmdebstrap);
- :mod:`~golem_local.images.builder`: ``golem-api image build``: the own interpreter, or a container engine
  (:mod:`~golem_local.images.engine`); RUN layers in :mod:`~golem_local.images.buildcache`;
- :mod:`~golem_local.images.registry`: the local store of image files by hash and tag;
- :mod:`~golem_local.images.serve`: the registry API the local node serves (``/v1/image/info``, downloads);
- :mod:`~golem_local.images.cache`: the providers' side: download, verify, unpack, once per hash;
- :mod:`~golem_api._images`: the requestor's side: a ``vm.repo`` payload's image → task package.
"""

__all__: list[str] = []
