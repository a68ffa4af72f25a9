package plugin

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bulkhead-dev/bulkhead/internal/evidence"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// maxShownEvidence bounds a detector's evidence on screen; the Secret
// holds all of it.
const maxShownEvidence = 2048

// describeKept prints the full evidence document of an evidence Secret:
// container statuses, Events, log tails, every detector's score and
// evidence, the fused breakdown.
func describeKept(out io.Writer, sec *corev1.Secret) error {
	d, err := evidence.Decode(sec)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nFull evidence:")
	fmt.Fprintf(w, "  Secret:\t%s/%s (sha256 %s)\n", sec.Namespace, sec.Name, sec.Annotations[evidence.SHA256Annotation])
	fmt.Fprintf(w, "  Pod:\t%s/%s on %s, captured %s\n", d.Namespace, d.Pod, orDash(d.Node), d.CapturedAt.UTC().Format(time.RFC3339))
	if at := sec.Annotations[evidence.ExpiresAnnotation]; at != "" {
		fmt.Fprintf(w, "  Kept until:\t%s\n", at)
	}
	if r := d.Reason; r != nil && r.Summary != "" {
		fmt.Fprintf(w, "  Reason:\t%s\n", r.Summary)
	}
	for _, n := range d.Notes {
		fmt.Fprintf(w, "  Note:\t%s\n", n)
	}
	for _, tr := range d.Trimmed {
		fmt.Fprintf(w, "  Trimmed:\t%s\n", tr)
	}
	if len(d.Containers) > 0 {
		fmt.Fprintln(w, "\nContainers:")
		fmt.Fprintln(w, "  NAME\tREADY\tRESTARTS\tSTATE\tLAST STATE")
		for _, c := range d.Containers {
			name := c.Name
			if c.Init {
				name += " (init)"
			}
			fmt.Fprintf(w, "  %s\t%s\t%d\t%s\t%s\n", name, yesNo(c.Ready), c.RestartCount, orDash(c.State), orDash(c.LastState))
		}
	}
	if len(d.Detectors) > 0 {
		fmt.Fprintln(w, "\nDetectors (fresh scores at capture):")
		fmt.Fprintln(w, "  DETECTOR\tSCORE\tAT\tREASON")
		for _, s := range d.Detectors {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", s.Detector, s.Score, s.Time.UTC().Format(time.RFC3339), orDash(s.Reason))
		}
		for _, s := range d.Detectors {
			switch {
			case len(s.Evidence) > 0:
				fmt.Fprintf(w, "  Evidence from %s:\t%s\n", s.Detector, kubeutil.Truncate(string(s.Evidence), maxShownEvidence))
			case s.EvidenceDropped > 0:
				fmt.Fprintf(w, "  Evidence from %s:\t(%d bytes, too large to keep)\n", s.Detector, s.EvidenceDropped)
			}
		}
	}
	for _, f := range d.Fused {
		fmt.Fprintf(w, "\nFused score of policy %s: %s (fresh weight %d of %d)\n", f.Policy, f.Score, f.FreshWeight, f.TotalWeight)
		for _, c := range f.Breakdown {
			fmt.Fprintf(w, "  %s\n", scoreLine(c))
		}
	}
	if len(d.Events) > 0 {
		fmt.Fprintln(w, "\nPod events:")
		fmt.Fprintln(w, "  TIME\tTYPE\tREASON\tCOUNT\tMESSAGE")
		for _, e := range d.Events {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%s\n", e.Time.UTC().Format(time.RFC3339), orDash(e.Type), orDash(e.Reason), e.Count, e.Message)
		}
	}
	if len(d.Logs) > 0 {
		fmt.Fprintln(w, "\nLogs (last lines, redacted):")
		for _, l := range d.Logs {
			switch {
			case l.Unavailable != "":
				fmt.Fprintf(w, "  %s:\tno log (%s)\n", l.Container, l.Unavailable)
			default:
				more := ""
				if l.Truncated {
					more = ", earlier lines not kept"
				}
				fmt.Fprintf(w, "  %s:\t%d lines%s\n", l.Container, len(l.Lines), more)
				if err := w.Flush(); err != nil {
					return err
				}
				// Log lines are printed as they are, outside the table.
				fmt.Fprintln(out, "    "+strings.Join(l.Lines, "\n    "))
			}
		}
	}
	return w.Flush()
}
