"""``vm.repo``: a payload for the ``vm`` runtime that runs an image from an image registry, as in yapapi::

    from golem_api import vm

    payload = await vm.repo(image_tag="golem-api/simple-service:1.0", min_mem_gib=0.5)

The image is named by its tag, by its hash (the SHA3-224 hex digest ``golem-api image build`` and
``gvmkit-build`` print), or by a URL with its hash. Nothing is asked of any registry here: ``Golem`` resolves
the name when it creates the demand, against the local node's registry on the local network and against
``$GOLEM_REGISTRY_URL``, else ``https://registry.golem.network``, on a real one (``repo_url=`` overrides
both; :mod:`golem_api._images`), so the same code runs on both.
"""

from __future__ import annotations

from collections.abc import Iterable

from golem_api._images import PUBLIC_REGISTRY
from golem_api.errors import ConfigurationError
from golem_api.payload import VmPayload
from golem_shared.imagehash import check_image_hash

__all__ = ["DEFAULT_REPOSITORY_URL", "VM_CAPS_INET", "VM_CAPS_MANIFEST_SUPPORT", "VM_CAPS_VPN", "repo"]

VM_CAPS_VPN = "vpn"
"""The ``vm`` runtime capability of joining a VPN (``capabilities=[vm.VM_CAPS_VPN]``), as in yapapi."""
VM_CAPS_MANIFEST_SUPPORT = "manifest-support"
"""The capability of running under a computation payload manifest, as in yapapi."""
VM_CAPS_INET = "inet"
"""The capability of reaching the internet from the VM (yapapi spells it only as the string ``"inet"``)."""
DEFAULT_REPOSITORY_URL = PUBLIC_REGISTRY
"""The public image registry asked on a live network when neither ``repo_url`` nor ``$GOLEM_REGISTRY_URL`` says."""


async def repo(
    *,
    image_hash: str | None = None,
    image_tag: str | None = None,
    image_url: str | None = None,
    image_use_https: bool = False,
    min_mem_gib: float = 0.5,
    min_storage_gib: float = 2.0,
    min_cpu_threads: int = 1,
    capabilities: Iterable[str] | None = None,
    repo_url: str | None = None,
    repository_url: str | None = None,
) -> VmPayload:
    """A :class:`~golem_api.payload.VmPayload` running the image named by ``image_tag``, ``image_hash``, or
    ``image_url`` together with ``image_hash``, on providers with at least the given resources.

    ``image_use_https`` takes the registry's https download URL instead of the http one; ``capabilities``
    (e.g. ``[vm.VM_CAPS_VPN]``) must all be offered; ``repo_url`` (or ``repository_url``, yapapi's name) is
    the registry to ask (default: see the module docstring). Raises :class:`~golem_api.errors.ConfigurationError`
    for a missing or contradictory name.
    """
    if repository_url is not None:
        if repo_url is not None and repo_url != repository_url:
            raise ConfigurationError(
                f"give the registry once: repo_url={repo_url!r} and repository_url={repository_url!r} differ"
            )
        repo_url = repository_url
    if image_url is not None:
        if image_tag is not None:
            raise ConfigurationError("give image_url= with image_hash=, not with image_tag=: the URL is the image")
        if image_hash is None:
            raise ConfigurationError(
                f"image_url={image_url!r} needs image_hash= too: providers check the file they download against it"
            )
        if not image_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"image_url={image_url!r} is not an http(s) URL")
    elif image_hash is None and image_tag is None:
        raise ConfigurationError(
            "name the image: image_tag='name:version', image_hash='<sha3 hex>', or image_url= with image_hash="
        )
    elif image_hash is not None and image_tag is not None:
        raise ConfigurationError("give either image_tag= or image_hash=, not both: a registry resolves one of them")
    if image_tag is not None and (not isinstance(image_tag, str) or not image_tag.strip()):
        raise ConfigurationError(f"image_tag must be a non-empty 'name:version', got {image_tag!r}")
    return VmPayload(
        min_mem_gib=min_mem_gib,
        min_storage_gib=min_storage_gib,
        min_cpu_threads=min_cpu_threads,
        image_hash=check_image_hash(image_hash) if image_hash is not None else None,
        image_tag=image_tag.strip() if image_tag is not None else None,
        image_url=image_url,
        image_use_https=image_use_https,
        capabilities=tuple(capabilities or ()),
        repo_url=repo_url.rstrip("/") if repo_url else None,
    )
