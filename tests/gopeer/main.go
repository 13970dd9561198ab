// gopeer: the Go library c2fo/vfs contrib/lockfile (v1.2.0, OS backend) as a real peer in
// vfslock's tests, driven by tests/src/gopeer.rs, which builds it against ../shared/go-lockfile.
//
//	gopeer reuse PATH TTL TRIES INTERVAL HOLD   one Lock value, Acquire retried: the hazard
//	gopeer fresh PATH TTL TRIES INTERVAL HOLD   a new Lock per attempt: what a Go program should do
//	gopeer poll PATH DURATION                   reads the lock's metadata over and over
//
// acquire modes print "acquired after N attempts" (exit 0, after holding for HOLD and
// releasing) or "held after N attempts" (exit 1); errors exit 2. poll prints "polled N times".
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/c2fo/vfs/contrib/lockfile"
	"github.com/c2fo/vfs/v7"
	osfs "github.com/c2fo/vfs/v7/backend/os"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", args...)
	os.Exit(2)
}

func duration(text string) time.Duration {
	d, err := time.ParseDuration(text)
	if err != nil {
		fail("bad duration %q: %v", text, err)
	}
	return d
}

func file(path string) vfs.File {
	f, err := osfs.NewFileSystem().NewFile("", path)
	if err != nil {
		fail("cannot name %s: %v", path, err)
	}
	return f
}

func acquire(reuse bool, args []string) {
	if len(args) != 5 {
		fail("usage: gopeer reuse|fresh PATH TTL TRIES INTERVAL HOLD")
	}
	f := file(args[0])
	ttl := duration(args[1])
	tries, err := strconv.Atoi(args[2])
	if err != nil {
		fail("bad tries %q", args[2])
	}
	interval, hold := duration(args[3]), duration(args[4])
	newLock := func() *lockfile.Lock {
		lock, err := lockfile.NewLock(f, lockfile.WithTTL(ttl), lockfile.WithOwnerID("gopeer"))
		if err != nil {
			fail("%v", err)
		}
		return lock
	}
	lock := newLock()
	for attempt := 1; attempt <= tries; attempt++ {
		if !reuse {
			lock = newLock()
		}
		err := lock.Acquire()
		if err == nil {
			fmt.Printf("acquired after %d attempts\n", attempt)
			time.Sleep(hold)
			if err := lock.Release(); err != nil {
				fail("release: %v", err)
			}
			os.Exit(0)
		}
		if !errors.Is(err, lockfile.ErrLockAlreadyHeld) {
			fail("acquire: %v", err)
		}
		time.Sleep(interval)
	}
	fmt.Printf("held after %d attempts\n", tries)
	os.Exit(1)
}

func poll(args []string) {
	if len(args) != 2 {
		fail("usage: gopeer poll PATH DURATION")
	}
	f := file(args[0])
	until := time.Now().Add(duration(args[1]))
	count := 0
	for time.Now().Before(until) {
		lock, err := lockfile.NewLock(f)
		if err != nil {
			fail("%v", err)
		}
		// What a Go program checking who holds a lock does; errors (no file, a file
		// being replaced) are expected while the lock cycles.
		_, _ = lock.Metadata()
		count++
	}
	fmt.Printf("polled %d times\n", count)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: gopeer reuse|fresh|poll ...")
	}
	switch os.Args[1] {
	case "reuse":
		acquire(true, os.Args[2:])
	case "fresh":
		acquire(false, os.Args[2:])
	case "poll":
		poll(os.Args[2:])
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
