package main

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Trace is one recorded process: its system calls in order.
type Trace struct {
	Name     string   // path inside the data set, for reports
	Family   string   // attack family; empty for normal traces
	Syscalls []string // one token per call (ADFA-LD: i386 numbers)
}

// Split is an ADFA-LD-layout data set.
type Split struct {
	Train, Validation, Attack []Trace
}

// ADFA-LD folder names, both the shared short form and the original release.
var (
	trainDirs = []string{"train", "Training_Data_Master"}
	valDirs   = []string{"validation", "Validation_Data_Master"}
	atkDirs   = []string{"attack", "Attack_Data_Master"}
)

var runSuffix = regexp.MustCompile(`_[0-9]+$`)

// Family is the attack family of a run folder: its name without the _<n> suffix.
func Family(folder string) string { return runSuffix.ReplaceAllString(folder, "") }

// LoadADFA reads an ADFA-LD layout from dir: train/, validation/ and
// attack/<Family>_<n>/ (or the original *_Data_Master names), either as
// folders or as *.tar.gz files in dir holding them, which are streamed so the
// data set is never copied.
func LoadADFA(dir string) (*Split, error) {
	s := &Split{}
	add := func(name string, r io.Reader) error {
		name = path.Clean(filepath.ToSlash(name))
		parts := strings.Split(name, "/")
		if len(parts) < 2 || !strings.HasSuffix(name, ".txt") {
			return nil
		}
		// The layout may sit below a wrapping folder (e.g. ADFA-LD/).
		for i := range parts[:len(parts)-1] {
			top := parts[i]
			switch {
			case in(top, trainDirs), in(top, valDirs):
				tr, err := readTrace(r)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				tr.Name = strings.Join(parts[i:], "/")
				if in(top, trainDirs) {
					s.Train = append(s.Train, tr)
				} else {
					s.Validation = append(s.Validation, tr)
				}
				return nil
			case in(top, atkDirs) && i+2 < len(parts):
				tr, err := readTrace(r)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				tr.Name = strings.Join(parts[i:], "/")
				tr.Family = Family(parts[i+1])
				s.Attack = append(s.Attack, tr)
				return nil
			}
		}
		return nil
	}
	if err := walk(dir, add); err != nil {
		return nil, err
	}
	if len(s.Train) == 0 || len(s.Attack) == 0 || len(s.Validation) == 0 {
		return nil, fmt.Errorf("%s: no ADFA-LD layout found (train %d, validation %d, attack %d traces)",
			dir, len(s.Train), len(s.Validation), len(s.Attack))
	}
	for _, l := range [][]Trace{s.Train, s.Validation, s.Attack} {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	return s, nil
}

func in(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

func readTrace(r io.Reader) (Trace, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Trace{}, err
	}
	return Trace{Syscalls: strings.Fields(string(b))}, nil
}

// walk calls fn for every regular file under dir and inside every *.tar.gz
// (or *.tgz) there, with names relative to dir or to the archive root.
func walk(dir string, fn func(name string, r io.Reader) error) error {
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.HasSuffix(p, ".tar.gz") || strings.HasSuffix(p, ".tgz") {
			return walkTar(p, fn)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		return fn(rel, f)
	})
}

func walkTar(p string, fn func(name string, r io.Reader) error) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(h.Name, tr); err != nil {
			return err
		}
	}
}
