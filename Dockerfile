# The kiln image, built by kiln: a static kiln for CI jobs that run in containers
# (docs/ci.md). From the repository root:
#
#   kiln build -t kiln --build-arg BASE=debian:bookworm .   # after .ci/static-kiln
#
# The context is only target/static/…/kiln (see .dockerignore).
#
# Base: Debian, not busybox. newuidmap/newgidmap (rootless RUN with a subuid range) and
# slirp4netns (RUN's private network) are Debian's dynamically linked programs with
# their libraries; apt installs them as Debian maintains them, and the glibc they bring
# also serves the static kiln's NSS lookups. The tests pass the loopback registry's copy
# of their debootstrap base as BASE.
ARG BASE=debian:bookworm
FROM ${BASE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends uidmap slirp4netns libcap2-bin ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/log/alternatives.log

# newuidmap/newgidmap with file capabilities instead of set-user-id root: each program
# holds only the one capability it needs (Debian 12 installs them setuid root).
# File capabilities need the container's bounding set to hold CAP_SETUID/CAP_SETGID
# (Docker's default set does) and no `no_new_privs` (Kubernetes:
# allowPrivilegeEscalation must not be false); docs/ci.md has the matrix.
RUN chmod 0755 /usr/bin/newuidmap /usr/bin/newgidmap \
 && setcap cap_setuid=ep /usr/bin/newuidmap \
 && setcap cap_setgid=ep /usr/bin/newgidmap

# A non-root user with a subordinate id range, for rootless builds (`--user kiln`).
RUN useradd --create-home --uid 1000 --user-group --shell /bin/sh kiln \
 && sed -i '/^kiln:/d' /etc/subuid /etc/subgid \
 && echo kiln:100000:65536 >> /etc/subuid \
 && echo kiln:100000:65536 >> /etc/subgid \
 && mkdir -p /var/lib/kiln /etc/containers \
 && chown kiln:kiln /var/lib/kiln \
 && printf 'unqualified-search-registries = ["docker.io"]\n' > /etc/containers/registries.conf \
 && printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' > /etc/containers/policy.json

COPY target/static/x86_64-unknown-linux-gnu/release/kiln /usr/local/bin/kiln

# The store (base images, layers, build cache) on a volume: it outlives the container
# and is kept off the container's copy-on-write layer.
ENV KILN_ROOT=/var/lib/kiln
VOLUME /var/lib/kiln
WORKDIR /workspace
CMD ["kiln", "--help"]
