package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxDepth bounds the walk: the deepest kubelet layout (kind, systemd, QoS)
// puts a container 5 levels down; a few more allow for a prefix.
const maxDepth = 10

// Scan lists the containers of pods under root, a cgroup v2 mount
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host), with their
// cgroup IDs. Directories that vanish while it walks (a pod deleted meanwhile)
// are left out, not errors.
func Scan(root string) ([]Container, error) {
	var out []Container
	var statErr error
	err := walk(root, func(rel, path string) bool {
		c, ok := Parse(rel)
		if !ok {
			return true
		}
		// Only containers need their ID: one stat each, not one per
		// directory of the tree.
		id, err := inode(path)
		switch {
		case gone(err):
		case err != nil:
			statErr = err
		default:
			c.ID = id
			out = append(out, c)
		}
		return false // a container's own sub-cgroups are its business
	})
	if err == nil {
		err = statErr
	}
	return out, err
}

// PodCgroups finds the pod-level cgroups of all pods under root in one walk:
// pod UID (with dashes, as in the API) → path relative to root. Looking up
// many pods costs one walk, not one per pod.
func PodCgroups(root string) (map[string]string, error) {
	out := map[string]string{}
	err := walk(root, func(rel, _ string) bool {
		if uid, _, ok := ParsePod(rel); ok {
			out[uid] = rel
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// walk visits every directory below root (not root itself) with its path
// relative to root and its full path, descending while visit returns true.
// It stats nothing: the directory entries say which are directories.
func walk(root string, visit func(rel, path string) bool) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("reading cgroup root: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		return fmt.Errorf("%s is not a cgroup v2 hierarchy (a hybrid host has it at /sys/fs/cgroup/unified): %w", root, err)
	}
	var rec func(dir, rel string, entries []os.DirEntry, depth int) error
	rec = func(dir, rel string, entries []os.DirEntry, depth int) error {
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			p, r := filepath.Join(dir, e.Name()), e.Name()
			if rel != "" {
				r = rel + "/" + r
			}
			if !visit(r, p) || depth+1 >= maxDepth {
				continue
			}
			sub, err := os.ReadDir(p)
			if gone(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading cgroup %s: %w", r, err)
			}
			if err := rec(p, r, sub, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return rec(root, "", entries, 0)
}

// gone reports an error from a directory that was removed under us.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

// inode is a cgroup's v2 ID: kernfs uses it as the directory's inode number.
func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}

// clean refuses a rel that would leave the root.
func clean(rel string) (string, error) {
	parts, ok := split(rel)
	if !ok {
		return "", fmt.Errorf("cgroup path %q is not a relative path below the root", rel)
	}
	return strings.Join(parts, "/"), nil
}
