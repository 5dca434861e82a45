// Command luahealth runs an Argo CD health script (health.lua) the way Argo CD runs a script
// from argocd-cm: gopher-lua (a Lua 5.1 VM) with only the package, base and table libraries
// (no string, math or os), the object as the global `obj` (integers as numbers), a one-second
// limit, and a returned table {status, message} whose status must be a known health code.
//
// Usage: luahealth SCRIPT < objects.json (a JSON array); prints a JSON array of
// {"status": ..., "message": ...} in the same order. A script error exits 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

func toLua(L *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return lua.LString(v)
		}
		return lua.LNumber(f)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

func run(script string, object map[string]interface{}) (result, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return result{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(script); err != nil {
		return result{}, err
	}
	returned, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return result{}, fmt.Errorf("expected a table from the script, got %s", L.Get(-1).Type())
	}
	r := result{}
	if s, ok := returned.RawGetString("status").(lua.LString); ok {
		r.Status = string(s)
	}
	if m, ok := returned.RawGetString("message").(lua.LString); ok {
		r.Message = string(m)
	}
	if !validStatus[r.Status] {
		return result{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return r, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: luahealth SCRIPT < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "luahealth: %v\n", err)
		os.Exit(2)
	}
	decoder := json.NewDecoder(os.Stdin)
	decoder.UseNumber()
	var objects []map[string]interface{}
	if err := decoder.Decode(&objects); err != nil {
		fmt.Fprintf(os.Stderr, "luahealth: stdin is not a JSON array of objects: %v\n", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(objects))
	for i, object := range objects {
		r, err := run(string(script), object)
		if err != nil {
			fmt.Fprintf(os.Stderr, "luahealth: object %d: %v\n", i, err)
			os.Exit(1)
		}
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
