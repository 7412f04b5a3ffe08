# modserve image: a build stage and a slim runtime stage.
#
#   podman build -t modserve:cpu .                      (or docker build)
#   podman run --rm -p 50051:50051 -p 9464:9464 modserve:cpu
#
# The GPU variant (not built or run here: no GPU is lent to this project):
#   podman build -t modserve:gpu --build-arg VARIANT=gpu \
#     --build-arg RUNTIME_BASE=nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04 \
#     --build-arg LIBTORCH_URL=https://download.pytorch.org/libtorch/cu121/libtorch-cxx11-abi-shared-with-deps-2.1.2%2Bcu121.zip .
# builds against the CUDA LibTorch from LIBTORCH_URL instead of Debian's CPU
# one and copies it into the image; README "Container" says more.
ARG BUILD_BASE=debian:bookworm-slim
ARG RUNTIME_BASE=debian:bookworm-slim

FROM ${BUILD_BASE} AS build
ARG VARIANT=cpu
ARG LIBTORCH_URL=
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$LIBTORCH_URL" ]; then \
      apt-get update -qq && apt-get install -y -qq --no-install-recommends curl unzip && \
      curl -fsSL "$LIBTORCH_URL" -o /tmp/libtorch.zip && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip; \
    else mkdir -p /opt/libtorch; fi
COPY CMakeLists.txt ./
COPY proto proto
COPY engine engine
COPY server server
COPY client client
COPY tests tests
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODSERVE_BUILD_TESTS=OFF \
      -DMODSERVE_ENABLE_CUDA=$([ "$VARIANT" = gpu ] && echo ON || echo OFF) \
      $([ -n "$LIBTORCH_URL" ] && echo -DCMAKE_PREFIX_PATH=/opt/libtorch) && \
    cmake --build build -j"$(nproc)" --target mod-server mod-client

FROM ${RUNTIME_BASE} AS runtime
ARG LIBTORCH_URL=
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /opt/libtorch /opt/libtorch
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin modserve
COPY --from=build /src/build/bin/mod-server /src/build/bin/mod-client /opt/modserve/bin/
COPY models/mod-small /opt/modserve/models/mod-small
COPY deploy/k8s/base/mod-server.yaml /etc/modserve/mod-server.yaml
USER 10001:10001
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
# mod-server is PID 1: it drains on SIGTERM (health NOT_SERVING, in-flight
# requests finish within drain_grace_seconds) and exits 0.
ENTRYPOINT ["/opt/modserve/bin/mod-server"]
CMD ["--config", "/etc/modserve/mod-server.yaml"]
