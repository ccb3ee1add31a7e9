"""seamless-stack: deploy the Seamless compute stack, one command, any topology.

Data flows one way:
    spec (what the user asked, validated)
      -> plan (ports allocated, directories resolved, addresses for clients and workers)
      -> backend (makes it real: Docker Compose, ...)
      -> health gate (every service answers, every worker is Seamless-ready)
      -> connection info (the environment output that Seamless clients source)
"""

__version__ = "0.1.0"
