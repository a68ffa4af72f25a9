package notify

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// Recorder returns an EventRecorder that records through inner and also
// sends the Events that are notices (BudgetExhausted, AutoReleaseExtended)
// to the sinks: the controllers say it once, as an Event, and whoever is on
// call hears it too.
func (d *Dispatcher) Recorder(inner events.EventRecorder) events.EventRecorder {
	if d == nil {
		return inner
	}
	return forwarding{EventRecorder: inner, d: d}
}

type forwarding struct {
	events.EventRecorder
	d *Dispatcher
}

func (f forwarding) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	f.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
	if _, ok := noticeTypes[reason]; ok {
		f.d.OnNotice(regarding, reason, fmt.Sprintf(note, args...))
	}
}
