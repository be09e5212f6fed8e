# One image per component: docker build --build-arg COMPONENT=cloud|edge|simulators .
# The edge image holds no web framework or database driver; the cloud image no PLC drivers.
ARG PYTHON=3.11

FROM node:20-bookworm-slim AS dashboards
WORKDIR /src/dashboards
COPY dashboards/package.json dashboards/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboards/ ./
RUN npm run build

FROM python:${PYTHON}-slim-bookworm AS app
ARG COMPONENT=cloud
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy PATH=/app/.venv/bin:$PATH
RUN pip install --no-cache-dir 'uv>=0.9,<0.14'
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY contract/ contract/
COPY edge/ edge/
COPY cloud/ cloud/
COPY simulators/ simulators/
COPY src/ src/
RUN uv sync --frozen --no-dev --package taktline-${COMPONENT}
COPY config/ config/
COPY --from=dashboards /src/dashboards/dist /app/dashboards/dist
RUN useradd --system --home /app taktline && mkdir -p /app/var && chown taktline /app/var
USER taktline
