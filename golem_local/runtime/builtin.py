"""The runtimes every local node knows: ``vm``, ``container``, ``idle`` and ``test-counters``.

The node makes ``vm`` and ``container`` runtimes itself (the demand's image, the provider's limits, its VPNs);
the factories of :data:`VM` and :data:`CONTAINER` make one for the default image only, as ``golem-api runtime
test`` needs.
"""

from __future__ import annotations

from golem_local.runtime.container import ContainerRuntime
from golem_local.runtime.counters import TEST_COUNTERS
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.image import DEFAULT_IMAGE
from golem_local.runtime.registry import RuntimeContext, RuntimeDescriptor
from golem_local.runtime.vm import VmRuntime

__all__ = ["BUILTIN_RUNTIMES", "CONTAINER", "IDLE", "TEST_COUNTERS", "VM"]


def _vm(context: RuntimeContext) -> VmRuntime:
    return VmRuntime(DEFAULT_IMAGE, context.work_dir, env=context.env)


def _container(context: RuntimeContext) -> ContainerRuntime:
    return ContainerRuntime(DEFAULT_IMAGE, context.work_dir, env=context.env)


def _idle(_context: RuntimeContext) -> IdleRuntime:
    return IdleRuntime()


VM = RuntimeDescriptor(
    name="vm",
    factory=_vm,
    version=VmRuntime.RUNTIME_VERSION,
    description="runs the demand's GVMI image in a bubblewrap sandbox, with the provider's limits",
)
CONTAINER = RuntimeDescriptor(
    name="container",
    factory=_container,
    version="0.1.0",
    description="runs the demand's GVMI image in a docker or podman container, with the provider's limits",
)
IDLE = RuntimeDescriptor(
    name="idle",
    factory=_idle,
    version="1.0.0",
    description="runs nothing: every command exits 0 with no output (for measuring requestors at scale)",
)
BUILTIN_RUNTIMES = (VM, CONTAINER, IDLE, TEST_COUNTERS)
"""The built-in runtimes, in the order ``golem-api runtime list`` shows them."""
