# syntax=docker/dockerfile:1
# Multi-stage image of the edge agent. Build: docker build -t edge-agent .
# Run:   docker run -d -v edge-agent-data:/var/lib/edge-agent -p 127.0.0.1:8470:8470 edge-agent   (the API is HTTPS: docs/api.md#tls)

# --- build: compile TypeScript and the native modules (better-sqlite3, unix-dgram), bundle the web console
FROM node:22-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY agent ./agent
COPY certs ./certs
COPY scripts ./scripts
# The web console (Preact, bundled by esbuild into dist/console: no CDN, it works with no internet).
COPY console ./console
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# --- runtime: no compiler, non-root user, state on a volume
FROM node:22-slim
ENV NODE_ENV=production \
    EDGE_AGENT_AGENT_DATA_DIR=/var/lib/edge-agent \
    EDGE_AGENT_MQTT_LISTEN_HOST=0.0.0.0
RUN groupadd --system edge-agent \
 && useradd --system --gid edge-agent --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent \
 && mkdir -p /var/lib/edge-agent \
 && chown edge-agent:edge-agent /var/lib/edge-agent \
 && chmod 0700 /var/lib/edge-agent
WORKDIR /opt/edge-agent
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY config ./config
COPY README.md ./
COPY docs ./docs
USER edge-agent
VOLUME ["/var/lib/edge-agent"]
EXPOSE 8470 8883 8884
# The listeners bind 0.0.0.0 inside the container so that the ports can be
# published; the local API is then HTTPS (config/edge-agent.docker.yaml).
# Publish 8470 on the host's loopback (-p 127.0.0.1:8470:8470) unless
# technicians reach it from the plant network; 8883 (MQTT provisioning, TLS)
# and 8884 (MQTT mutual TLS) are for the devices.
# The health check only asks whether the agent answers: it skips verifying
# the certificate (no token or data crosses), clients must not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "require('node:https').get({host:'127.0.0.1',port:8470,path:'/healthz',rejectUnauthorized:false},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# Commands run with docker exec read the same file without --config.
ENV EDGE_AGENT_CONFIG=/opt/edge-agent/config/edge-agent.docker.yaml
ENTRYPOINT ["node", "dist/agent/main.js"]
CMD ["run", "--config", "config/edge-agent.docker.yaml"]
