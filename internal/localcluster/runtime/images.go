// Package runtime runs the containers of the local cluster as processes: an
// image map says what files an image name stands for, and the container
// launcher (Launch, run in a fresh mount namespace) builds each container's
// view of the filesystem and executes its command.
package runtime

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Image is what an image name stands for on this machine.
type Image struct {
	// Env is set before the container's own environment (PATH, usually).
	Env map[string]string `json:"env,omitempty"`
	// Files maps a path inside the container to a file of the repository.
	Files map[string]string `json:"files,omitempty"`
	// Users are added to the container's /etc/passwd and /etc/group.
	Users []User `json:"users,omitempty"`
}

// User is a passwd entry.
type User struct {
	Name string `json:"name"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Home string `json:"home,omitempty"`
}

// ImageMap maps image names to images.
type ImageMap struct {
	Images map[string]Image `json:"images"`
	// root resolves relative file paths.
	root string
	path string
}

// LoadImageMap reads the image map at path; relative file paths in it are
// resolved against root.
func LoadImageMap(path, root string) (*ImageMap, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image map: %w", err)
	}
	m := &ImageMap{}
	if err := yaml.UnmarshalStrict(b, m); err != nil {
		return nil, fmt.Errorf("image map %s: %w", path, err)
	}
	m.root, m.path = root, path
	return m, nil
}

// ErrImagePull says why an image cannot be run; the kubelet reports it as
// the container's waiting reason.
type ErrImagePull struct{ Image, Why string }

func (e *ErrImagePull) Error() string { return fmt.Sprintf("image %q: %s", e.Image, e.Why) }

// Resolve returns the image called name with absolute file paths, or an
// *ErrImagePull.
func (m *ImageMap) Resolve(name string) (Image, error) {
	img, ok := m.Images[name]
	if !ok {
		return Image{}, &ErrImagePull{Image: name, Why: "not in the local cluster's image map " + m.path}
	}
	files := map[string]string{}
	for dst, src := range img.Files {
		if !filepath.IsAbs(src) {
			src = filepath.Join(m.root, src)
		}
		if _, err := os.Stat(src); err != nil {
			return Image{}, &ErrImagePull{Image: name, Why: fmt.Sprintf("file %s for %s is missing (build it first)", src, dst)}
		}
		files[dst] = src
	}
	img.Files = files
	return img, nil
}
