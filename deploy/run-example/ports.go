package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// port is an address a process of the example listens on.
type port struct {
	addr string // host:port
	what string // "the twinflow admin API"
	hint string // what to do when it is taken
}

// checkFree returns an error naming the first port that is in use, by which
// process when it can tell, and what to do about it.
func checkFree(ports []port) error {
	for _, p := range ports {
		l, err := net.Listen("tcp", p.addr)
		if err == nil {
			l.Close()
			continue
		}
		by := ""
		if holder := holderOf(p.addr); holder != "" {
			by = " by " + holder
		}
		return fmt.Errorf("%s (%s) is in use%s: %s", p.addr, p.what, by, p.hint)
	}
	return nil
}

// holderOf names the process listening on the TCP address addr, as
// "pid 1234 (twinflow run -config ...)", or returns "" when it cannot tell
// (not Linux, or the process belongs to another user).
func holderOf(addr string) string {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	p, err := strconv.Atoi(portStr)
	if err != nil {
		return ""
	}
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listeningInodes(table, p, inodes)
	}
	if len(inodes) == 0 {
		return ""
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			pidDir := filepath.Dir(filepath.Dir(fd))
			cmdline, _ := os.ReadFile(filepath.Join(pidDir, "cmdline"))
			cmd := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
			return fmt.Sprintf("pid %s (%s)", filepath.Base(pidDir), cmd)
		}
	}
	return ""
}

// listeningInodes adds the socket inodes of the table's listening sockets
// on port to inodes. A line of /proc/net/tcp reads
// "sl local_address rem_address st ... inode", the port in hex after the
// colon of local_address and st 0A for LISTEN.
func listeningInodes(table string, port int, inodes map[string]bool) {
	f, err := os.Open(table)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
			inodes[fields[9]] = true
		}
	}
}
