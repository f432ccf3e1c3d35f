# syntax=docker/dockerfile:1
# The twinflow binary (cmd/twinflow): the runtime and the command line.
# Build from the repository's root:
#   docker build -f deploy/docker/twinflow.Dockerfile -t twinflow .

FROM golang:1.26-bookworm AS build
WORKDIR /src
# The modules first, so that a change of the code reuses the download.
COPY go.mod go.sum go.work go.work.sum ./
COPY proto/go.mod proto/go.sum proto/
COPY sdk/go.mod sdk/go.sum sdk/
RUN go mod download
COPY . .
# A static binary: no C library in the image.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/twinflow ./cmd/twinflow

# No shell, no package manager; the nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/twinflow /twinflow
USER 65532:65532
ENTRYPOINT ["/twinflow"]
