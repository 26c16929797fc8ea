"""A local stand-in for the Weiban OpenAPI, with the vendor's quota rules and error codes
and fault injection. Tests, benchmarks and `broadcaster demo` use it; nothing in this
project calls the real Weiban servers."""

from broadcaster.vendor.sandbox.server import SandboxServer
from broadcaster.vendor.sandbox.state import SandboxConfig, SandboxState

__all__ = ["SandboxConfig", "SandboxServer", "SandboxState"]
