# The one regent binary, static, on distroless (nonroot). The database pods'
# init container copies it from /usr/local/bin/regent (names.ImageBinaryPath)
# into the pod, so the path is part of the contract.
#
# Both bases are build arguments: hack/images.sh builds the image with bases
# made on the machine itself, where no registry is reachable.
ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
ARG GOPROXY
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/regent-dev/regent/internal/version.Version=${VERSION}" \
    -o /out/regent .

FROM ${BASE_IMAGE}
COPY --from=build /out/regent /usr/local/bin/regent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/regent"]
