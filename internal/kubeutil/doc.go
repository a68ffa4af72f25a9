// Package kubeutil holds the small helpers every Bulkhead writer shares:
// server-side apply through unstructured under Bulkhead's field manager, the
// API's message bound, requeue jitter and the Quarantine target kind. One
// implementation each, so their behaviour cannot drift apart.
package kubeutil
