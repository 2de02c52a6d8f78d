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
    private readonly ITestOutputHelper _output;
    private readonly LiveSampleSystem _live = new();

    public QubeTrustCmdletTests(ITestOutputHelper output)
    {
        _output = output;
        _live.Server.SetPowerState("default-dvm", PowerState.Running);
        Nft(escapes: false);
    }

    public void Dispose() => _live.Dispose();

    private Dictionary<string, string> Environment => _live.Environment;

    private PsRun Run(string script) => _live.Run(script);

    private static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    private static bool IsControl(char c) => c is < ' ' and not ('\n' or '\t') or '\x7f' or (>= '\x80' and <= '\x9f');

    /// <summary>
    /// A stand-in nft: <c>nft -f -</c> logs the transaction (and with <paramref name="escapes"/> answers with terminal
    /// escapes).
    /// </summary>
    private void Nft(bool escapes)
    {
        var shim = Path.Combine(_live.QvmRun.Shims, "nft");
        File.WriteAllText(shim, $$"""
            #!/bin/bash
            if [ "$1" = -f ]; then
              { echo "=== $QFW_STANDIN_VM"; cat; } >> '{{_live.QvmRun.NftLog}}'
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
        _live.QvmRun.Put("sys-net", FwScript, "#!/bin/sh\n", Mode0755);
        var shim = Path.Combine(_live.QvmRun.Shims, "cat");
        File.WriteAllText(shim, "#!/bin/sh\nif [ \"$QFW_STANDIN_VM\" = sys-net ]; then exec head -c 300000000 /dev/zero; fi\nexec /bin/cat \"$@\"\n");
        File.SetUnixFileMode(shim, Mode0755);
    }

    private IEnumerable<string> Writes => _live.QvmRun.Calls.Where(c => c.Args[^1].Contains("mktemp", StringComparison.Ordinal)).Select(c => c.Args[7]);

    [Fact]
    public void A_status_read_that_sys_net_answers_with_300_MB_is_cut_named_and_never_used()
    {
        SysNetAnswers300MB(); // its agent's status read too
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru");
        var error = Assert.Single(run.Errors);
        _output.WriteLine(error.ToString());
        Assert.Equal(Fqid("PortForwardAgentUnconfirmed", "AddQubePortForward"), error.FullyQualifiedErrorId);
        Assert.Contains("'sys-net' answered more than 64 KiB on its output when asked to run read the QubesFirewall agent status; qvm-run was stopped", error.ToString());
        Assert.Equal(PortForwardHopStatus.Unconfirmed, run.Of<PortForwardHopResult>().Single(h => h.VMName == "sys-net").Status);
        Assert.Equal(7, _live.Server.CountCalls("admin.vm.feature.Set")); // the features are set; only the answer is not trusted
        Assert.Empty(Writes);
    }

    [Fact]
    public void Test_QubeFirewall_reports_the_file_it_could_not_judge()
    {
        SysNetAnswers300MB();
        var run = Run("Test-QubeFirewall -VMName sys-net -Deep"); // -Deep: the hook files are read in the qubes only when asked
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
                     "Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -ErrorVariable +e -ErrorAction SilentlyContinue; " +
                     "$null = Test-QubeFirewall -VMName sys-net -Deep; " +
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
        Assert.Contains("errors: PortForwardAgentUnconfirmed,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand", stdout);
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
    public void The_audit_shows_the_qubes_own_lines_escaped()
    {
        // a block an earlier version left, with a line the qube forged: the audit names it without its escapes taking effect
        _live.QvmRun.Put("sys-net", FwScript, "#!/bin/sh\n# >>> qubesfirewall managed block: do not edit >>>\n" +
            "add rule ip qubes qubesfw-dnat tcp dport 443 dnat to 10.137.0.3 comment \"tcp/443 to work\"\n# <<< qubesfirewall <<<\n# \u001b]0;pwned\u0007\u001b[2J\u009broot@dom0:~# \n", Mode0755);
        var run = Run("Test-QubeFirewall -VMName work -Deep");
        var finding = Assert.Single(run.Of<AuditFinding>(), f => f.Check == ForwardAuditChecks.UndeclaredPart);
        Assert.Equal("Install-QubeFirewallAgent -VMName sys-net", finding.Fix);
        Assert.DoesNotContain(finding.Message, IsControl);
        Assert.Empty(Writes);
    }

    [Fact]
    public void PassThru_results_carry_an_agent_status_out_of_grammar_escaped()
    {
        // every agent answers with terminal escapes: no status of the grammar, so no confirmation, and the answer shown escaped
        var shim = Path.Combine(_live.QvmRun.Shims, "cat");
        File.WriteAllText(shim, "#!/bin/bash\nif [ \"$1\" = /run/qubesfw/status ]; then printf '\\033]0;owned\\007\\033[2J\\302\\233root@dom0:~# '; exit 0; fi\nexec /bin/cat \"$@\"\n");
        File.SetUnixFileMode(shim, Mode0755);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru");
        Assert.Equal(Fqid("PortForwardAgentUnconfirmed", "AddQubePortForward"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal(3, hops.Count);
        _output.WriteLine(hops[0].Message);
        Assert.All(hops, h => Assert.Equal(PortForwardHopStatus.Unconfirmed, h.Status));
        Assert.All(hops, h => Assert.Contains("\\x1b]0;owned\\x07\\x1b[2J\\x9broot@dom0:~# ", h.Message));
        Assert.All(hops, h => Assert.DoesNotContain(h.Message!, IsControl));
        Assert.DoesNotContain(run.Errors[0].ToString(), IsControl);
    }

    [Fact]
    public void A_Remove_whose_agent_fails_is_an_error_and_puts_every_feature_back()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        _live.QvmRun.AgentsAnswer(Path.Combine(_live.Root.Path, "qubes.xml"), Engine.Agent.AgentScript.Version, failIn: "sys-net");
        var run = Run("Remove-QubePortForward work 443 -Confirm:$false -PassThru; $?");
        var error = Assert.Single(run.Errors);
        _output.WriteLine(error.ToString());
        Assert.Equal(Fqid("PortForwardAgentFailed", "RemoveQubePortForward"), error.FullyQualifiedErrorId);
        var message = error.ToString();
        Assert.Contains("Could not process rule", message);
        Assert.Contains("Every feature was put back as it was.", message);
        Assert.DoesNotContain(run.Verbose, v => v.Contains("done", StringComparison.Ordinal));
        Assert.False((bool)run.Output[^1].BaseObject);
        Assert.Contains(run.Of<PortForwardHopResult>(), h => h.VMName == "sys-net" && h.Status == PortForwardHopStatus.Failed);
        Assert.Single(Run("Get-QubePortForward work").Of<QubePortForward>()); // still declared, its keys back
    }
}
