package kubeutil

// MaxMessage is the API's bound on a message (action, audit, condition,
// reason summary).
const MaxMessage = 1024

// Truncate returns at most n bytes of s, cut back to a rune boundary so the
// result stays valid UTF-8.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
