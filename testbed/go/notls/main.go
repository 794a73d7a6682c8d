// A Go program without crypto/tls: the recorder must leave it alone. It prints {"ready": true},
// echoes each line of stdin back upper-cased, and exits at end of input.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Println(`{"ready": true}`)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Println(strings.ToUpper(in.Text()))
	}
}
