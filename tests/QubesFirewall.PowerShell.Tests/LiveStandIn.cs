using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The live backend's surroundings for a test: the stand-in qubesd serving a sample root copy, and a stand-in
/// qvm-run on PATH whose fixed file commands work on the root's state folder (where the offline root keeps the
/// qubes' files) and which keeps a script sent on standard input as <c>last-run.sh</c> instead of running it; the
/// QubesFirewall agent's status read is answered as by a running agent that applied the generation of its keys.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveStandIn : IDisposable
{
    // the agent's status read, as the shell sees it in $(cat): without its final newline
    private static readonly string StatusScript = QubesFirewall.Engine.Agent.AgentDelivery.StatusCommand.TrimEnd('\n');

    private static readonly string OriginalPath = System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin";

    public LiveStandIn(string rootPath, string prefix = "qfw-live-")
    {
        RootPath = rootPath;
        Dir = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(Path.Combine(Dir, "bin"));
        Server = new FakeQubesd(rootPath, Path.Combine(Dir, "qubesd.sock"));
        var state = Path.Combine(rootPath, "qubesfirewall-state");
        var exe = Path.Combine(Dir, "bin", "qvm-run");
        File.WriteAllText(exe, $$"""
            #!/bin/bash
            state='{{state}}'
            {{StandInQvmRun.ArgumentLoop}}
            echo "$vm $cmd" >> '{{Dir}}/qvm-run.log'
            mkdir -p "$state/$vm"
            if [ "$cmd" = 'exec /bin/sh -s 2>&1' ]; then
              script=$(cat)
              # the QubesFirewall agent's status: a running agent has applied the generation its gen feature carries
              if [ "$script" = "{{StatusScript}}" ]; then
                g=$(grep -o "for=$vm gen=[0-9a-f]* keys=" '{{Path.Combine(rootPath, "qubes.xml")}}' | head -n 1 | sed 's/.* gen=\([0-9a-f]*\) .*/\1/')
                [ -n "$g" ] || g=none
                echo "state=applied gen=$g applied=$g version={{QubesFirewall.Engine.Agent.AgentScript.Version}} msg="
                exit 0
              fi
              printf '%s\n' "$script" > "$state/$vm/last-run.sh"; echo "live run" >> "$state/$vm/applied.log"; exit 0
            fi
            pat="'/rw/"; rep="'$state/$vm/rw/"
            cmd="${cmd//"$pat"/"$rep"}"
            exec sh -c "$cmd"
            """.Replace("\r", "", StringComparison.Ordinal) + "\n");
        File.SetUnixFileMode(exe, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public string RootPath { get; }

    /// <summary>The folder of the socket, the qvm-run stub (bin/) and its log (qvm-run.log).</summary>
    public string Dir { get; }

    public FakeQubesd Server { get; }

    /// <summary>The lines qvm-run was called with ("vm command"), empty before the first call.</summary>
    public IReadOnlyList<string> QvmRunLog => File.Exists(Path.Combine(Dir, "qvm-run.log")) ? File.ReadAllLines(Path.Combine(Dir, "qvm-run.log")) : [];

    /// <summary>The environment a hosted runspace needs to use the live backend against the stand-ins.</summary>
    public Dictionary<string, string> Environment => new()
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = Server.SocketPath,
        ["QUBESFW_DOM0_ROOT"] = Path.Combine(RootPath, "qubesfirewall-state", "dom0"),
        ["PATH"] = Path.Combine(Dir, "bin") + ":" + OriginalPath,
    };

    public void Dispose()
    {
        Server.Dispose();
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}
