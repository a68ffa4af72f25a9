package containment

import (
	"strconv"
	"strings"
)

// MaxNameLength bounds Quarantine names: they are label values.
const MaxNameLength = 63

// QuarantineName names a policy's Quarantine after the pod, truncated to 63
// characters, adding -2, -3... while taken reports the name in use.
func QuarantineName(pod string, taken func(string) bool) string {
	for i := 1; ; i++ {
		suffix := ""
		if i > 1 {
			suffix = "-" + strconv.Itoa(i)
		}
		base := pod
		if len(base)+len(suffix) > MaxNameLength {
			base = base[:MaxNameLength-len(suffix)]
		}
		// A name may not end in '-' or '.' once cut.
		name := strings.TrimRight(base, "-.") + suffix
		if !taken(name) {
			return name
		}
	}
}
