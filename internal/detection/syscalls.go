package detection

import (
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// syscallsIn is the compact syscall-batch format of POST /v1/syscalls.
type syscallsIn struct {
	Namespace string     `json:"namespace"`
	Pod       string     `json:"pod"`
	Container string     `json:"container"`
	ID        string     `json:"id"`
	Time      *time.Time `json:"time"`
	Calls     string     `json:"calls"`
}

// DecodeSyscalls decodes POST /v1/syscalls: one object or an array, each a
// run of system call names separated by spaces.
func DecodeSyscalls(body []byte) (Batch, *Error) {
	in, e := decodeOneOrMany[syscallsIn](body)
	if e != nil {
		return Batch{}, e
	}
	b := Batch{Items: make([]Item, 0, len(in))}
	for i := range in {
		s := &in[i]
		calls := strings.Fields(s.Calls)
		switch {
		case s.Namespace == "" || s.Pod == "":
			return Batch{}, errorf(ReasonMalformed, "namespace and pod are required").at(i)
		case len(calls) == 0:
			return Batch{}, errorf(ReasonMalformed, "calls is empty").at(i)
		case len(s.ID) > maxIDLen:
			return Batch{}, errorf(ReasonMalformed, "id longer than %d characters", maxIDLen).at(i)
		}
		be := &detector.BehaviorEvent{Namespace: s.Namespace, Pod: s.Pod, Container: s.Container, Syscalls: calls}
		if s.Time != nil {
			be.Time = *s.Time
		}
		b.Items = append(b.Items, Item{Detector: detector.Behavior, Behavior: be, ID: s.ID})
	}
	return b, nil
}
