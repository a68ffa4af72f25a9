package evidence

import (
	"encoding/json"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// secretArg matches names that carry a secret: --password=x, --token x,
// api_key=x and the like.
var secretArg = regexp.MustCompile(`(?i)(pass(word|wd)?|secret|token|api[-_]?key|credential|auth)`)

// urlPassword is the password of a URL or DSN: postgres://user:pw@host.
var urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)@`)

// secretAssignment is "password=x", "token: x", "api_key=x" inside free text.
var secretAssignment = regexp.MustCompile(`(?i)([A-Za-z0-9_.-]*(?:pass(?:word|wd)?|secret|token|api[-_]?key|credential)[A-Za-z0-9_.-]*["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&"']+)`)

// bearer is an Authorization header value in free text.
var bearer = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`)

// toolFlag is a short flag whose value is a secret for one tool.
type toolFlag struct {
	flag string
	// separate: "-a X" carries the secret too (for mysql, "-p X" prompts
	// and X is the database).
	separate bool
}

// attachedSecretFlags are the tools whose short flags carry a secret
// (mysql -pX, redis-cli -a X, sshpass -p X); elsewhere -p is usually a
// port and is kept.
var attachedSecretFlags = map[string]toolFlag{
	"mysql": {"-p", false}, "mysqldump": {"-p", false}, "mysqladmin": {"-p", false}, "mysqlimport": {"-p", false},
	"mysqlshow": {"-p", false}, "mariadb": {"-p", false}, "mariadb-dump": {"-p", false}, "mariadb-admin": {"-p", false},
	"redis-cli": {"-a", true}, "sshpass": {"-p", true},
}

// RedactPodSpec returns a copy with env values, secret-like arguments (also
// inside shell scripts), URL passwords, probe HTTP header values and the
// secrets of probe and lifecycle exec commands replaced. References
// (secretKeyRef, configMapKeyRef) are kept: they name a source, not the
// secret itself.
func RedactPodSpec(in *corev1.PodSpec) *corev1.PodSpec {
	spec := in.DeepCopy()
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			c := &cs[i]
			redactContainer(c.Env, &c.Args, &c.Command, []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe}, c.Lifecycle)
		}
	}
	for i := range spec.EphemeralContainers {
		c := &spec.EphemeralContainers[i].EphemeralContainerCommon
		redactContainer(c.Env, &c.Args, &c.Command, []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe}, c.Lifecycle)
	}
	return spec
}

func redactContainer(env []corev1.EnvVar, args, command *[]string, probes []*corev1.Probe, lc *corev1.Lifecycle) {
	for j := range env {
		if env[j].Value != "" {
			env[j].Value = Redacted
		}
	}
	*args, *command = RedactArgs(*args), RedactArgs(*command)
	handlers := make([]*corev1.LifecycleHandler, 0, 2)
	if lc != nil {
		handlers = append(handlers, lc.PostStart, lc.PreStop)
	}
	for _, h := range handlers {
		if h == nil {
			continue
		}
		if h.Exec != nil {
			h.Exec.Command = RedactArgs(h.Exec.Command)
		}
		if h.HTTPGet != nil {
			redactHeaders(h.HTTPGet)
		}
	}
	for _, p := range probes {
		if p == nil {
			continue
		}
		if p.Exec != nil {
			p.Exec.Command = RedactArgs(p.Exec.Command)
		}
		if p.HTTPGet != nil {
			redactHeaders(p.HTTPGet)
		}
	}
}

// redactHeaders hides every header value: probes carry Authorization,
// cookies and API keys under any name.
func redactHeaders(h *corev1.HTTPGetAction) {
	for i := range h.HTTPHeaders {
		h.HTTPHeaders[i].Value = Redacted
	}
	h.Path = RedactText(h.Path)
}

// RedactArgs hides the value of secret-like flags, both --flag=value and
// "--flag value", the attached passwords of known tools (mysql -pX), URL
// passwords, and all of these inside an argument that is a shell script
// (sh -c "mysql -pX ...").
func RedactArgs(args []string) []string {
	if args == nil {
		return nil
	}
	out := make([]string, len(args))
	next, tool := false, ""
	for i, a := range args {
		switch {
		case next:
			out[i], next = Redacted, false
		case strings.ContainsAny(a, " \t\n"):
			// A script: its words are redacted as arguments are.
			out[i] = redactScript(a)
		case strings.Contains(a, "://"):
			out[i] = urlPassword.ReplaceAllString(a, "${1}"+Redacted+"@")
		case strings.Contains(a, "="):
			k, _, _ := strings.Cut(a, "=")
			if secretArg.MatchString(k) {
				out[i] = k + "=" + Redacted
			} else {
				out[i] = a
			}
		case attachedSecret(tool, a):
			out[i] = a[:2] + Redacted
		case strings.HasPrefix(a, "-") && secretArg.MatchString(a):
			out[i], next = a, true
		case separateSecret(tool, a):
			out[i], next = a, true
		default:
			out[i] = a
		}
		if t := toolName(a); t != "" {
			tool = t
		} else if a == "&&" || a == "||" || a == ";" || a == "|" {
			tool = ""
		}
	}
	return out
}

// redactScript redacts a shell script word by word. Lines are kept; runs of
// blanks within a line become one space.
func redactScript(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(RedactArgs(strings.Fields(l)), " ")
	}
	return RedactText(strings.Join(lines, "\n"))
}

// toolName returns the command a word names when it is one of the tools
// with attached secret flags.
func toolName(word string) string {
	base := word[strings.LastIndex(word, "/")+1:]
	base = strings.Trim(base, `"'`)
	if _, ok := attachedSecretFlags[base]; ok {
		return base
	}
	return ""
}

func attachedSecret(tool, a string) bool {
	f, ok := attachedSecretFlags[tool]
	return ok && len(a) > len(f.flag) && strings.HasPrefix(a, f.flag)
}

func separateSecret(tool, a string) bool {
	f, ok := attachedSecretFlags[tool]
	return ok && f.separate && a == f.flag
}

// redactLine redacts one line of free text: as a script when it has
// several words, then as text.
func redactLine(s string) string {
	if s == "" {
		return s
	}
	return RedactText(RedactArgs([]string{s})[0])
}

// RedactText hides URL passwords, "password=x"-style assignments and
// bearer or basic credentials in free text (log lines, detector reasons).
func RedactText(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = secretAssignment.ReplaceAllString(s, "${1}"+Redacted)
	return bearer.ReplaceAllString(s, "${1} "+Redacted)
}

// redactJSON redacts every string of a detector's JSON evidence as text and
// the values of secret-like keys whole. Input that is not JSON is kept as a
// redacted JSON string.
func redactJSON(raw json.RawMessage) json.RawMessage {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		b, _ := json.Marshal(RedactText(string(raw)))
		return b
	}
	b, err := json.Marshal(redactValue(v))
	if err != nil {
		return nil
	}
	return b
}

func redactValue(v any) any {
	switch t := v.(type) {
	case string:
		return redactLine(t)
	case []any:
		for i := range t {
			t[i] = redactValue(t[i])
		}
	case map[string]any:
		for k, e := range t {
			if _, isString := e.(string); isString && secretArg.MatchString(k) {
				t[k] = Redacted
				continue
			}
			t[k] = redactValue(e)
		}
	}
	return v
}
