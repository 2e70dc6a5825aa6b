// visio-kstatus: the health that kstatus (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and
// `kubectl wait`-style tools read) computes for Kubernetes objects. Reads one JSON object per line
// on stdin and writes one JSON line per object on stdout: {"status": "Current", "message": "..."}.
// An object that cannot be read gets {"error": "..."}; the process goes on with the next line.
package main

import (
	"bufio"
	"encoding/json"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r result
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(in.Bytes()); err != nil {
			r.Error = err.Error()
		} else if res, err := status.Compute(u); err != nil {
			r.Error = err.Error()
		} else {
			r.Status, r.Message = res.Status.String(), res.Message
		}
		if err := out.Encode(r); err != nil {
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
