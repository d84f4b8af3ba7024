# syntax=docker/dockerfile:1
# shapewise: the training server (`shapewise serve`) and its workers (`shapewise worker`) in a
# small runtime image.
#
#   docker build -t shapewise .
#   docker run -p 8080:8080 -v shapewise-data:/data shapewise
#
# The GPU variant, for GPU workers (burn's wgpu/Vulkan backend; the NVIDIA container runtime
# mounts the driver's Vulkan ICD when the graphics capability is requested):
#
#   docker build --build-arg FEATURES=vulkan -t shapewise:vulkan .

ARG FEATURES=""

FROM rust:1.95-bookworm AS builder
ARG FEATURES
WORKDIR /build
# sqlx queries are checked at run time and `sqlx::migrate!` embeds migrations/ at compile time,
# so the build needs neither DATABASE_URL nor a database.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src/ src/
COPY migrations/ migrations/
COPY templates/ templates/
COPY static/ static/
# Cache mounts keep the crate registry and compiled dependencies between builds, so editing src/
# recompiles only shapewise. The target dir is a cache, not an image layer: copy the binary out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked ${FEATURES:+--features "$FEATURES"} \
    && cp target/release/shapewise /usr/local/bin/shapewise

FROM debian:bookworm-slim
ARG FEATURES
# The Vulkan loader for the GPU variant (the driver itself comes from the host's runtime).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
       $(case "$FEATURES" in *vulkan*) echo libvulkan1 libegl1 libgl1;; esac) \
    && rm -rf /var/lib/apt/lists/*
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
# Runs unprivileged; /data (the SQLite database) is owned by that user before VOLUME declares it,
# so a fresh named volume inherits the ownership and stays writable.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app shapewise \
    && mkdir -p /data \
    && chown shapewise:shapewise /data
COPY --from=builder /usr/local/bin/shapewise /usr/local/bin/shapewise
COPY --from=builder /build/templates/ /app/templates/
COPY --from=builder /build/static/ /app/static/
WORKDIR /app
USER shapewise
ENV SHAPEWISE_ADDR=0.0.0.0:8080 SHAPEWISE_DB=/data/shapewise.db
VOLUME /data
EXPOSE 8080
# The image has no curl: bash's /dev/tcp sends the request, and the port comes from
# SHAPEWISE_ADDR so the check follows an overridden address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SHAPEWISE_ADDR##*:} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1\\.[01] 200' <&3"]
ENTRYPOINT ["shapewise"]
CMD ["serve"]
