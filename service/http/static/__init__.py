"""The web page's files, served by ``service.http.ui``."""
