// Command regexp_diff is the Go side of Rookery's differential test of
// permission keys (tests/regexp_diff.rs): it answers, with Go's own regexp
// package (the engine whose syntax PROTOCOL.md §6 adopts), whether each key
// compiles and which room names it matches.
//
// Input on stdin, one JSON object per line:  {"key": "...", "rooms": ["...", ...]}
// Output on stdout, one JSON object per line: {"ok": true, "error": "", "matches": [true, ...]}
// ("matches" is all false when the key does not compile). Standard library only,
// so `go run main.go` works offline.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
)

type request struct {
	Key   string   `json:"key"`
	Rooms []string `json:"rooms"`
}

type answer struct {
	Ok      bool   `json:"ok"`
	Error   string `json:"error"`
	Matches []bool `json:"matches"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "regexp_diff: bad input line: %v\n", err)
			os.Exit(2)
		}
		ans := answer{Matches: make([]bool, len(req.Rooms))}
		re, err := regexp.Compile(req.Key)
		if err != nil {
			ans.Error = err.Error()
		} else {
			ans.Ok = true
			for i, room := range req.Rooms {
				ans.Matches[i] = re.MatchString(room)
			}
		}
		if err := enc.Encode(ans); err != nil {
			fmt.Fprintf(os.Stderr, "regexp_diff: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "regexp_diff: %v\n", err)
		os.Exit(2)
	}
}
