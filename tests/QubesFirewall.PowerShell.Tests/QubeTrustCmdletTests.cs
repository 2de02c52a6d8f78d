using System.Diagnostics;
using System.Globalization;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;
using Xunit.Abstractions;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// dom0 trusts nothing a qube sends back, through the cmdlets on the live backend: a stand-in qvm-run whose
/// sys-net answers like a compromised one (300 MB for its hook file, terminal escapes in its lines and its
/// script output, nft that fails and keeps failing), against the one bounded reader and the one sanitizer.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class QubeTrustCmdletTests : IDisposable
{
    private const string FwScript = "/rw/config/qubes-firewall-user-script";
    private const UnixFileMode Mode0755 = (UnixFileMode)0b111_101_101;
    private static readonly string OriginalPath = System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin";

    private readonly ITestOutputHelper _output;
    private readonly SampleRootCopy _root = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-trust-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly FakeQubesd _server;
    private readonly StandInQvmRun _qvmRun;

    public QubeTrustCmdletTests(ITestOutputHelper output)
    {
        _output = output;
        Directory.CreateDirectory(_dir);
        _server = new FakeQubesd(_root.Path, Path.Combine(_dir, "qubesd.sock"));
        _qvmRun = new StandInQvmRun(Path.Combine(_dir, "qvm-run"), powerStates: Path.Combine(_root.Path, "qubesfirewall-state"));
        _server.SetPowerState("default-dvm", PowerState.Running);
        Nft(escapes: false);
    }

    public void Dispose()
    {
        _server.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        _root.Dispose();
    }

    private Dictionary<string, string> Environment => new()
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = _server.SocketPath,
        ["PATH"] = _qvmRun.BinFolder + ":" + OriginalPath,
    };

    private PsRun Run(string script) => PowerShellHost.Run(script, environment: Environment);

    private static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    private static bool IsControl(char c) => c is < ' ' and not ('\n' or '\t') or '\x7f' or (>= '\x80' and <= '\x9f');

    /// <summary>
    /// A stand-in nft: <c>nft -f -</c> logs the transaction (and with <paramref name="escapes"/> answers with terminal
    /// escapes); it fails every time in a qube named in the file <c>nft-broken</c> (ip6 qubes gone: new and previous scripts alike).
    /// </summary>
    private void Nft(bool escapes)
    {
        var shim = Path.Combine(_qvmRun.Shims, "nft");
        File.WriteAllText(shim, $$"""
            #!/bin/bash
            if [ "$1" = -f ]; then
              if grep -qx "$QFW_STANDIN_VM" '{{_dir}}/nft-broken' 2>/dev/null; then cat > /dev/null; echo 'Error: No such file or directory; did you mean table ip6 qubes?' >&2; exit 1; fi
              { echo "=== $QFW_STANDIN_VM"; cat; } >> '{{_qvmRun.NftLog}}'
              {{(escapes ? "printf '\\033]0;owned\\007\\033[2J\\302\\233root@dom0:~# '" : "")}}
              exit 0
            fi
            echo "table $4 $5 {"; echo '}'
            """.Replace("\r", "", StringComparison.Ordinal) + "\n");
        File.SetUnixFileMode(shim, Mode0755);
    }

    /// <summary>sys-net answers a read of its hook file with 300 MB.</summary>
    private void SysNetAnswers300MB()
    {
        _qvmRun.Put("sys-net", FwScript, "#!/bin/sh\n", Mode0755);
        var shim = Path.Combine(_qvmRun.Shims, "cat");
        File.WriteAllText(shim, "#!/bin/sh\nif [ \"$QFW_STANDIN_VM\" = sys-net ]; then exec head -c 300000000 /dev/zero; fi\nexec /bin/cat \"$@\"\n");
        File.SetUnixFileMode(shim, Mode0755);
    }

    private IEnumerable<string> Writes => _qvmRun.Calls.Where(c => c.Args[^1].Contains("mktemp", StringComparison.Ordinal)).Select(c => c.Args[7]);

    [Fact]
    public void Add_refuses_when_sys_net_answers_300_MB_names_qube_and_file_and_writes_nothing()
    {
        SysNetAnswers300MB();
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -PassThru");
        var error = Assert.Single(run.Errors);
        _output.WriteLine(error.ToString());
        Assert.Equal(Fqid("QubeAnswerTooLarge", "AddQubePortForward"), error.FullyQualifiedErrorId);
        Assert.Contains($"'sys-net' answered more than 1 MiB on its output when asked to read {FwScript}", error.ToString());
        Assert.Equal(0, _server.CountCalls("admin.vm.feature.Set"));
        Assert.Empty(Writes);
        Assert.Empty(run.Output);
    }

    [Fact]
    public void Test_QubeFirewall_reports_the_file_it_could_not_judge()
    {
        SysNetAnswers300MB();
        var run = Run("Test-QubeFirewall -VMName sys-net");
        var finding = Assert.Single(run.Of<AuditFinding>(), f => f.Check == AuditChecks.CheckFailed);
        _output.WriteLine($"{finding.Severity} {finding.Check}: {finding.Message} Fix: {finding.Fix}");
        Assert.Equal(AuditSeverity.Error, finding.Severity);
        Assert.Contains("'sys-net' answered more than 1 MiB", finding.Message);
        Assert.Contains(FwScript, finding.Message);
    }

    [Fact]
    public async Task Peak_memory_stays_under_400_MB_when_a_qube_answers_300_MB()
    {
        SysNetAnswers300MB();
        // The cmdlets in a pwsh of their own, so the peak resident set (VmHWM) is theirs alone.
        var script = $"Import-Module '{Repo.StagedManifest}'; " +
                     "Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -ErrorVariable +e -ErrorAction SilentlyContinue; " +
                     "$null = Test-QubeFirewall -VMName sys-net; " +
                     "'errors: ' + (($e | ForEach-Object FullyQualifiedErrorId) -join ','); " +
                     "(Get-Content /proc/self/status | Where-Object { $_ -like 'VmHWM:*' })";
        var info = new ProcessStartInfo(DotnetHost(), ["pwsh", "-NoProfile", "-NonInteractive", "-Command", script])
        {
            WorkingDirectory = Repo.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (k, v) in Environment) info.Environment[k] = v;
        info.Environment["NO_COLOR"] = "1";
        using var pwsh = Process.Start(info)!;
        var stderr = pwsh.StandardError.ReadToEndAsync();
        var stdout = await pwsh.StandardOutput.ReadToEndAsync();
        Assert.True(pwsh.WaitForExit(TimeSpan.FromMinutes(3)), "pwsh did not finish");
        _output.WriteLine(stdout);
        _output.WriteLine(await stderr);
        Assert.Contains("errors: QubeAnswerTooLarge,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand", stdout);
        var line = stdout.Split('\n').Single(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        var kb = long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        _output.WriteLine($"peak resident set: {kb / 1024} MiB");
        Assert.InRange(kb, 1, 400 * 1024);
    }

    private static string DotnetHost()
    {
        var self = System.Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        var root = System.Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        return "dotnet";
    }

    [Fact]
    public void WhatIf_shows_the_qubes_own_lines_escaped()
    {
        _qvmRun.Put("sys-net", FwScript, "#!/bin/sh\n# \u001b]0;pwned\u0007\u001b[2J\u009broot@dom0:~# \n", Mode0755);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -WhatIf");
        run.AssertNoErrors();
        var shown = string.Join("\n", run.Information);
        _output.WriteLine(shown);
        Assert.Contains("# \\x1b]0;pwned\\x07\\x1b[2J\\x9broot@dom0:~# ", shown);
        Assert.DoesNotContain(shown, IsControl);
        Assert.Empty(Writes);
    }

    [Fact]
    public void PassThru_results_carry_script_output_escaped()
    {
        Nft(escapes: true);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -PassThru");
        run.AssertNoErrors();
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal(3, hops.Count);
        _output.WriteLine(hops[0].Output);
        Assert.All(hops, h => Assert.Contains("\\x1b]0;owned\\x07\\x1b[2J\\x9broot@dom0:~# ", h.Output));
        Assert.All(hops, h => Assert.DoesNotContain(h.Output!, IsControl));
    }

    [Fact]
    public void A_Remove_that_could_not_close_the_port_is_an_error_naming_the_qubes_left()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force").AssertNoErrors();
        File.WriteAllText(Path.Combine(_dir, "nft-broken"), "sys-net\n");
        var run = Run("Remove-QubePortForward work 443 -Confirm:$false -PassThru; $?");
        var error = Assert.Single(run.Errors);
        _output.WriteLine(error.ToString());
        Assert.Equal(Fqid("PortForwardPartiallyApplied", "RemoveQubePortForward"), error.FullyQualifiedErrorId);
        var message = error.ToString();
        Assert.Contains("sys-net (RollbackFailed)", message);
        Assert.Contains("did you mean table ip6 qubes?", message);
        Assert.DoesNotContain(run.Verbose, v => v.Contains("done", StringComparison.Ordinal));
        Assert.False((bool)run.Output[^1].BaseObject);
        Assert.Contains(run.Of<PortForwardHopResult>(), h => h.VMName == "sys-net" && h.Status == PortForwardHopStatus.RollbackFailed);
    }
}
