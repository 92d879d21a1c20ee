"""The HTTP side: routes and server (`http`), the landing page, basic auth."""
