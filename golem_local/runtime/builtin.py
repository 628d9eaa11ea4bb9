"""The runtimes every local node knows: ``vm``, ``idle`` and ``test-counters``.

The node makes ``vm`` runtimes itself (the demand's image, the provider's limits, its VPNs); the factory of
:data:`VM` makes one for the default image only, as ``golem-api runtime test vm`` needs.
"""

from __future__ import annotations

from golem_local.runtime.counters import TEST_COUNTERS
from golem_local.runtime.idle import IdleRuntime
from golem_local.runtime.image import DEFAULT_IMAGE
from golem_local.runtime.registry import RuntimeContext, RuntimeDescriptor
from golem_local.runtime.vm import VmRuntime

__all__ = ["BUILTIN_RUNTIMES", "IDLE", "TEST_COUNTERS", "VM"]


def _vm(context: RuntimeContext) -> VmRuntime:
    return VmRuntime(DEFAULT_IMAGE, context.work_dir, env=context.env)


def _idle(_context: RuntimeContext) -> IdleRuntime:
    return IdleRuntime()


VM = RuntimeDescriptor(
    name="vm",
    factory=_vm,
    version=VmRuntime.RUNTIME_VERSION,
    description="runs the demand's GVMI image in a bubblewrap sandbox, with the provider's limits",
)
IDLE = RuntimeDescriptor(
    name="idle",
    factory=_idle,
    version="1.0.0",
    description="runs nothing: every command exits 0 with no output (for measuring requestors at scale)",
)
BUILTIN_RUNTIMES = (VM, IDLE, TEST_COUNTERS)
"""The built-in runtimes, in the order ``golem-api runtime list`` shows them."""
