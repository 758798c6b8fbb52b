# The image configs/rayservice.yaml runs on every pod (head, CPU and GPU workers):
# Ray 2.60.0 on Python 3.11 with CUDA, torch, and this project with its trained
# weights (package data), so nothing is downloaded when a pod starts.
#   docker build -t registry.example.com/portrait-cartoon:0.1.0 .
# Walk-through: docs/DEPLOY.md ("Build the image").
FROM rayproject/ray:2.60.0-py311-gpu

# torch on its own layer: the largest download, and it changes less often than the code.
# PyPI's Linux torch wheel is the CUDA build; it also runs on the CPU-only worker pods.
RUN pip install --no-cache-dir torch==2.13.0

# What serve_config.yaml's runtime_env sets for `serve run` (the RayService has none):
# replicas' malloc arenas capped, so replica memory stays steady (docs/RELIABILITY.md).
ENV MALLOC_ARENA_MAX=2

WORKDIR /home/ray/portrait-cartoon
COPY --chown=ray:users pyproject.toml README.md LICENSE ./
COPY --chown=ray:users cartoon ./cartoon
COPY --chown=ray:users deployments ./deployments
COPY --chown=ray:users serve_app ./serve_app
RUN pip install --no-cache-dir . \
    && python -c "import serve_app.app, cartoon.image.styles as s; s.StyleRegistry.from_directory(s.DEFAULT_STYLES_DIR)"
