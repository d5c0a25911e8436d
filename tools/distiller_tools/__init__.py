"""Developer and operator tooling for trigger-distiller: the `distiller` CLI, the local pipeline and
servers, ops commands. Installed by `make install`; never part of the Lambda layer."""
