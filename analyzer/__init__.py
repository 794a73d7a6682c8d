"""oisp-analyze: rebuild connections and exchanges from segments and emit OISP events."""
