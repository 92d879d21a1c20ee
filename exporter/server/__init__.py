"""The HTTP side: what it answers (`http`), how connections are bounded (`connections`), landing page, basic auth."""
