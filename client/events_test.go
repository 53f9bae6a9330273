package client

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func stream(s string) *EventStream {
	body := io.NopCloser(strings.NewReader(s))
	return &EventStream{body: body, sc: newScanner(body)}
}

func TestEventStreamParses(t *testing.T) {
	s := stream("retry: 2000\n: interlock event feed from sequence 1\n\n" +
		"id: 1\nevent: io.interlock.flag.created.v1\ndata: {\"id\":\"e1\",\"type\":\"io.interlock.flag.created.v1\",\"sequence\":1}\n\n" +
		"id: 2\n: skipped sequence 2: not a well-formed Interlock event\n\n" +
		": heartbeat\n\n" +
		"id: 3\r\nevent: io.interlock.flag.killed.v1\r\ndata: {\"id\":\"e3\",\"sequence\":3}\r\n\r\n")
	ev, err := s.Next()
	if err != nil || ev.ID != "e1" || s.Last != 1 {
		t.Fatalf("first: %+v (last %d), %v", ev, s.Last, err)
	}
	ev, err = s.Next()
	if err != nil || ev.ID != "e3" || s.Last != 3 {
		t.Fatalf("after a skipped message: %+v (last %d), %v", ev, s.Last, err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	if _, err := stream("id: 4\ndata: {not json\n\n").Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("bad data: %v", err)
	}
}

// FuzzEventStream: any bytes give events, an error or io.EOF, never a panic or a loop.
func FuzzEventStream(f *testing.F) {
	f.Add("id: 1\nevent: t\ndata: {\"id\":\"e1\"}\n\n")
	f.Add("id: x\ndata: \n\n: c\n\nid: 18446744073709551615\n\n")
	f.Add("data: [1,2]\n\ndata: null\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		s := stream(in)
		for range len(in) + 1 {
			if _, err := s.Next(); err != nil {
				return
			}
		}
		t.Fatalf("more events than bytes in %q", in)
	})
}
