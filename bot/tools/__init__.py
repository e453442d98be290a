"""Tools: MCP servers the operator configures (`MCP_CONFIG`), which a channel's persona may use
(`/persona tools`), called from the turn's model loop. See docs/tools.md."""
