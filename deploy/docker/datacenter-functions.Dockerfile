# syntax=docker/dockerfile:1
# The data-center example's function endpoint
# (examples/datacenter/cmd/datacenter-functions). Build from the
# repository's root:
#   docker build -f deploy/docker/datacenter-functions.Dockerfile -t datacenter-functions .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum go.work go.work.sum ./
COPY proto/go.mod proto/go.sum proto/
COPY sdk/go.mod sdk/go.sum sdk/
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/datacenter-functions ./examples/datacenter/cmd/datacenter-functions

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/datacenter-functions /datacenter-functions
USER 65532:65532
ENTRYPOINT ["/datacenter-functions"]
