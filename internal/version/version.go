// Package version holds the build's version, stamped by the linker:
// -X github.com/regent-dev/regent/internal/version.Version=v1.2.3
package version

// Version is the release this binary was built from ("dev" when unstamped).
var Version = "dev"

// DefaultRegentImage is the image that holds this very binary.
func DefaultRegentImage() string { return "regent:" + Version }
