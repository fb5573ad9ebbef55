"""The web page's files, served by ``service.api.ui``."""
