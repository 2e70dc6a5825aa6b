// visio-participant: real LiveKit participants for the e2e suite, driven over stdin/stdout.
//
// Each participant joins with LiveKit's Go SDK (signalling WebSocket + WebRTC over loopback ICE), as a
// browser would. Commands come one JSON object a line on stdin:
//
//	{"op":"join","id":"p1","url":"ws://127.0.0.2:7880","room":"r1"}
//	{"op":"leave","id":"p1"}
//
// Events go one JSON object a line to stdout:
//
//	{"id":"p1","event":"joined","room":"r1"}
//	{"id":"p1","event":"data","topic":"visio.system","payload":"{...}"}
//	{"id":"p1","event":"reconnecting"} / {"id":"p1","event":"reconnected"}
//	{"id":"p1","event":"disconnected","reason":"ROOM_DELETED"}   (not asked for: the harness counts a cut)
//	{"id":"p1","event":"left"}                                    (asked for)
//	{"id":"p1","event":"error","error":"..."}                     (the join failed)
//
// The API key and secret come from LIVEKIT_API_KEY/LIVEKIT_API_SECRET. On stdin's end every participant
// leaves and the process exits. URLs must be loopback: the suite never dials anything else.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
)

type command struct {
	Op   string `json:"op"`
	ID   string `json:"id"`
	URL  string `json:"url"`
	Room string `json:"room"`
}

type event struct {
	ID      string `json:"id"`
	Event   string `json:"event"`
	Room    string `json:"room,omitempty"`
	Topic   string `json:"topic,omitempty"`
	Payload string `json:"payload,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
}

var (
	outMu sync.Mutex
	out   = json.NewEncoder(os.Stdout)
)

func emit(e event) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(e)
}

type participant struct {
	room    *lksdk.Room
	leaving bool
}

type driver struct {
	key, secret string
	mu          sync.Mutex
	people      map[string]*participant
}

func loopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address", raw)
	}
	return nil
}

func (d *driver) join(c command) {
	if err := loopback(c.URL); err != nil {
		emit(event{ID: c.ID, Event: "error", Error: err.Error()})
		return
	}
	token, err := auth.NewAccessToken(d.key, d.secret).
		SetIdentity(c.ID).
		SetValidFor(6 * time.Hour).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: c.Room}).
		ToJWT()
	if err != nil {
		emit(event{ID: c.ID, Event: "error", Error: err.Error()})
		return
	}
	p := &participant{}
	d.mu.Lock()
	d.people[c.ID] = p
	d.mu.Unlock()
	cb := lksdk.NewRoomCallback()
	cb.ParticipantCallback.OnDataPacket = func(data lksdk.DataPacket, _ lksdk.DataReceiveParams) {
		if u, ok := data.(*lksdk.UserDataPacket); ok {
			emit(event{ID: c.ID, Event: "data", Topic: u.Topic, Payload: string(u.Payload)})
		}
	}
	cb.OnReconnecting = func() { emit(event{ID: c.ID, Event: "reconnecting"}) }
	cb.OnReconnected = func() { emit(event{ID: c.ID, Event: "reconnected"}) }
	cb.OnDisconnected = func() {
		d.mu.Lock()
		leaving := p.leaving
		reason := livekit.DisconnectReason_UNKNOWN_REASON
		if p.room != nil {
			reason = p.room.DisconnectReason()
		}
		delete(d.people, c.ID)
		d.mu.Unlock()
		if leaving {
			emit(event{ID: c.ID, Event: "left"})
		} else {
			emit(event{ID: c.ID, Event: "disconnected", Reason: reason.String()})
		}
	}
	// Relay only: every packet goes through the node's TURN on 127.0.0.1 (pion gathers no loopback host
	// candidates, and the suite never sends to an address outside 127.0.0.0/8).
	// Two busy cores may take longer than the SDK's 5 s to bring up ICE and DTLS.
	room, err := lksdk.ConnectToRoomWithToken(c.URL, token, cb, lksdk.WithAutoSubscribe(false),
		lksdk.WithICETransportPolicy(webrtc.ICETransportPolicyRelay), lksdk.WithConnectTimeout(20*time.Second))
	if err != nil {
		d.mu.Lock()
		delete(d.people, c.ID)
		d.mu.Unlock()
		emit(event{ID: c.ID, Event: "error", Error: err.Error()})
		return
	}
	d.mu.Lock()
	p.room = room
	d.mu.Unlock()
	emit(event{ID: c.ID, Event: "joined", Room: c.Room})
}

func (d *driver) leave(id string) {
	d.mu.Lock()
	p, ok := d.people[id]
	if ok {
		p.leaving = true
	}
	d.mu.Unlock()
	if !ok || p.room == nil {
		emit(event{ID: id, Event: "error", Error: "no such participant"})
		return
	}
	// A leave the client asks for calls no OnDisconnected (Room.DisconnectWithReason): say it here.
	p.room.Disconnect()
	d.mu.Lock()
	_, still := d.people[id]
	delete(d.people, id)
	d.mu.Unlock()
	if still {
		emit(event{ID: id, Event: "left"})
	}
}

func main() {
	d := &driver{key: os.Getenv("LIVEKIT_API_KEY"), secret: os.Getenv("LIVEKIT_API_SECRET"), people: map[string]*participant{}}
	if d.key == "" || d.secret == "" {
		fmt.Fprintln(os.Stderr, "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are required")
		os.Exit(2)
	}
	var wg sync.WaitGroup
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var c command
		if err := json.Unmarshal(in.Bytes(), &c); err != nil || c.ID == "" {
			emit(event{Event: "error", Error: fmt.Sprintf("bad command %q", in.Text())})
			continue
		}
		switch c.Op {
		case "join":
			wg.Add(1)
			go func() { defer wg.Done(); d.join(c) }()
		case "leave":
			wg.Add(1)
			go func() { defer wg.Done(); d.leave(c.ID) }()
		default:
			emit(event{ID: c.ID, Event: "error", Error: "unknown op " + c.Op})
		}
	}
	wg.Wait()
	d.mu.Lock()
	ids := make([]string, 0, len(d.people))
	for id := range d.people {
		ids = append(ids, id)
	}
	d.mu.Unlock()
	for _, id := range ids {
		d.leave(id)
	}
	time.Sleep(500 * time.Millisecond)
}
