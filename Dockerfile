# syntax=docker/dockerfile:1
# BatchRunner server image.
#
#   docker build -t batchrunner .
#   docker run --privileged --init -p 8080:8080 \
#       -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v batchrunner-data:/var/lib/batchrunner \
#       -e BATCHRUNNER_API_KEY=change-me batchrunner
#
# Jobs run in OCI containers (runc/crun) inside this container, so it needs
# --privileged (namespaces, mounts, cgroups) and a writable cgroup tree. Keep
# /var/lib/batchrunner on a volume: image layers are unpacked and overlay-mounted
# there, and overlayfs cannot use the container's own overlay root as upper dir.
# Without BATCHRUNNER_CONNECTION_STRING the server runs its own embedded PostgreSQL
# in /var/lib/batchrunner/postgres (the postgresql package below provides it).

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
ENV DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# Only what the server build needs (tests, dashboards, docs stay out of the build context's
# layers); NuGet packages are cached across builds by BuildKit.
COPY global.json .editorconfig Directory.Build.props Directory.Packages.props ./
COPY src/ src/
RUN --mount=type=cache,target=/root/.nuget/packages \
    dotnet publish src/BatchRunner.Server/BatchRunner.Server.csproj -c Release -o /app --nologo

# .NET 10 images are Ubuntu 24.04 ("noble") based; there are no Debian variants.
FROM mcr.microsoft.com/dotnet/aspnet:10.0-noble AS runtime
# No services are started during the build (policy-rc.d), and Debian/Ubuntu's
# postgresql package creates no cluster of its own: BatchRunner makes its own.
RUN set -eux; \
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
    chmod 755 /usr/sbin/policy-rc.d; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/batchrunner.conf; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        runc crun iproute2 iptables containernetworking-plugins ca-certificates curl postgresql e2fsprogs; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY --from=build /app /app

# --init (docker run) or init: true (compose) reaps the OCI runtime's orphaned children.
ENV BATCHRUNNER_URLS=http://0.0.0.0:8080 \
    BATCHRUNNER_DATA_DIR=/var/lib/batchrunner \
    DOTNET_ROOT=/usr/share/dotnet
VOLUME ["/var/lib/batchrunner"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1

ENTRYPOINT ["/app/batchrunner"]
