package main

import "syscall"

// procAttr puts a child in a process group of its own, and has the kernel
// send it SIGTERM should the launcher die without stopping it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
