"""Real peers for tests and the demo: TLS servers on loopback with a throwaway CA."""
