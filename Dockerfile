# boneage serve in a container: the HTTP service and its page on port 8000, with the shipped model.
# NOT BUILT OR RUN HERE: the project's machine has no Docker. See docs/serve.md.
#   docker build -t boneage . && docker run --rm -p 8000:8000 boneage
FROM python:3.11-slim

# OpenCV (headless) needs no X libraries; libgl is not needed.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=2

WORKDIR /src
COPY pyproject.toml README.md LICENSE MODEL-NOTICE ./
COPY src ./src
COPY exported ./exported
# plot: the growth chart; add dicom for DICOM uploads: ".[serve,plot,dicom]"
RUN pip install ".[serve,plot]" && rm -rf /src

RUN useradd --system --uid 10001 boneage
USER boneage
WORKDIR /home/boneage
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
# 0.0.0.0 inside the container; publish the port only to a proxy or a trusted network.
CMD ["boneage", "serve", "--host", "0.0.0.0", "--port", "8000"]
