"""One plain-Python use case per asset: read, apply rules and generators, persist, report."""
