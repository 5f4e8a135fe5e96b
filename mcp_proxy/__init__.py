"""The MCP wrapper (`ctxzip mcp-proxy`): an MCP server in front of another whose tool
results it makes smaller, lossless first (docs/integrations.md)."""
