"""The Ray Serve application: typed settings, the HTTP ingress and the graph's wiring."""
