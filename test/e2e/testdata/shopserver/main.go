// Command shopserver is the e2e's "shop" workload: a static file server
// (net/http) with a deliberately vulnerable endpoint, /debug/run?cmd=...,
// that hands its argument to /bin/sh -c, the remote-code-execution hole an
// attacker uses to spawn a shell, download and run a payload, open a
// reverse shell or read a credential file.
package main

import (
	"flag"
	"log"
	"net/http"
	"os/exec"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	root := flag.String("root", ".", "directory served")
	flag.Parse()
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(*root)))
	mux.HandleFunc("/debug/run", func(w http.ResponseWriter, r *http.Request) {
		cmd := exec.Command("/bin/sh", "-c", r.URL.Query().Get("cmd"))
		if r.URL.Query().Get("detach") != "" {
			// A reverse shell outlives the request.
			if err := cmd.Start(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			go func() { _ = cmd.Wait() }()
			return
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = w.Write(out)
	})
	log.Fatal(http.ListenAndServe(*addr, mux))
}
