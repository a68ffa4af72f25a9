package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

// runEval is `bulkhead eval`: train and score the behavior model offline
// on a data set.
func runEval(args []string) error {
	fs := flag.NewFlagSet("bulkhead eval", flag.ContinueOnError)
	dir := fs.String("dataset-dir", "", "Data set folder (or folder of .tar.gz files) in the ADFA-LD or LID-DS 2021 layout.")
	format := fs.String("format", "adfa", "Layout of --dataset-dir: adfa or lidds.")
	out := fs.String("out", "", "Folder for report.json and roc.png (ADFA-LD); none when empty.")
	n := fs.Int("ngram", 0, "Longest system-call n-gram (0: the manager's default).")
	bits := fs.Int("ngram-bits", 0, "Size of the n-gram filter in bits (0: the manager's default).")
	window := fs.Duration("window", time.Second, "LID-DS: replay window, one scored batch each.")
	threshold := fs.Float64("threshold", 0, "LID-DS: alarm when a window scores above this (0: the highest score on the validation recordings).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dataset-dir is required")
	}
	cfg := behavior.Config{SeqN: *n, SeqBits: *bits}
	var report any
	switch *format {
	case "adfa":
		split, err := eval.LoadADFA(*dir)
		if err != nil {
			return err
		}
		r, err := eval.RunADFA(filepath.Base(*dir), split, cfg, os.Stderr)
		if err != nil {
			return err
		}
		r.WriteTable(os.Stdout)
		if *out != "" {
			if err := os.MkdirAll(*out, 0o755); err != nil {
				return err
			}
			f, err := os.Create(filepath.Join(*out, "roc.png"))
			if err != nil {
				return err
			}
			if err := eval.WriteROCPNG(f, r.ROC, r.ReferenceROC); err != nil {
				_ = f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
		report = r
	case "lidds":
		recs, err := eval.LoadLIDDS(*dir)
		if err != nil {
			return err
		}
		r := eval.RunLIDDS(filepath.Base(*dir), recs, cfg, *window, *threshold, os.Stderr)
		r.WriteTable(os.Stdout)
		report = r
	default:
		return fmt.Errorf("--format %q: want adfa or lidds", *format)
	}
	if *out == "" {
		return nil
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", filepath.Join(*out, "report.json"))
	return os.WriteFile(filepath.Join(*out, "report.json"), append(b, '\n'), 0o644)
}
