using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Add-, Get- and Remove-QubeTcpBinding through a hosted runspace, with the same expectations on both backends:
/// <see cref="OfflineTcpBindingCmdletTests"/> (an offline root) and <see cref="LiveTcpBindingCmdletTests"/> (the stand-in
/// qubesd serving the same root, dom0's files under the root's <c>qubesfirewall-state/dom0</c> through
/// $env:QUBESFW_DOM0_ROOT, and a stand-in qvm-run that keeps the qubes' files where the offline root keeps them and
/// records scripts instead of running them). The generated policy is read with the test-side qrexec model.
/// </summary>
public abstract class TcpBindingCmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();

    public virtual void Dispose() => _root.Dispose();

    protected abstract PsRun Run(string script);

    protected static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    protected string PolicyDirectory => Path.Combine(_root.Path, "qubesfirewall-state", "dom0", "etc", "qubes", "policy.d");

    protected string? PolicyFile => File.Exists(Path.Combine(PolicyDirectory, "70-qubesfirewall.policy")) ? File.ReadAllText(Path.Combine(PolicyDirectory, "70-qubesfirewall.policy")) : null;

    protected string? StateFile(string qube, string path)
    {
        var file = Path.Combine(_root.Path, "qubesfirewall-state", qube, path.TrimStart('/'));
        return File.Exists(file) ? File.ReadAllText(file) : null;
    }

    /// <summary>The calls the policy directory decides, as qrexec would (the module's file, the sample's 35-compat and 90-default).</summary>
    protected QrexecPolicyModel.Result Decide(string source, int port)
    {
        var files = Directory.EnumerateFiles(PolicyDirectory).Select(f => (Path.GetFileName(f), File.ReadAllText(f)));
        var domains = new Dictionary<string, QrexecPolicyModel.Domain>(StringComparer.Ordinal)
        {
            ["work"] = new("AppVM", []), ["personal"] = new("AppVM", []), ["untrusted"] = new("AppVM", []), ["vault"] = new("AppVM", []),
        };
        return QrexecPolicyModel.Evaluate(QrexecPolicyModel.Load(files), "qubes.ConnectTCP", "+" + port, source, "@default", domains);
    }

    [Fact]
    public void A_qube_from_Get_Qube_gets_a_permanent_binding_that_qrexec_allows_and_its_client_listens()
    {
        var run = Run("Get-Qube work | Add-QubeTcpBinding -To personal -Port 22 -LocalPort 2222 -Permanent -PassThru");
        run.AssertNoErrors();
        var b = Assert.Single(run.Of<QubeTcpBinding>());
        Assert.Equal(("work", "personal", 22, 2222, true), (b.From, b.To, b.Port!.Value, b.LocalPort!.Value, b.Permanent));
        Assert.Equal("qubesfirewall-tcp-2222.socket", b.Unit);
        Assert.Equal("qubes.ConnectTCP\t+22\twork\t@default\tallow target=personal", b.PolicyLine);

        Assert.Equal("uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b localport=2222 permanent=yes", // bound to work's uuid
            Run("(Get-Qube work).Features['qubesfirewall.tcp.personal.22']").Output.Single().BaseObject);
        var allowed = Decide("work", 22);
        Assert.Equal(("allow", "personal", "70-qubesfirewall.policy"), (allowed.Outcome, allowed.Target, allowed.Rule!.File));
        Assert.Equal("deny", Decide("personal", 22).Outcome);
        Assert.Equal("deny", Decide("work", 23).Outcome);

        var rc = StateFile("work", "/rw/config/rc.local")!;
        Assert.StartsWith("#!/bin/sh\n", rc);
        Assert.Contains("ListenStream=127.0.0.1:2222", rc);
        Assert.Contains("ExecStart=/usr/bin/qrexec-client-vm @default qubes.ConnectTCP+22", rc);
        // the listener script ran (offline: recorded) in work, the client
        Assert.Contains("qfw_listen 2222 'qubes.ConnectTCP+22'", StateFile("work", "last-run.sh"));
    }

    [Fact]
    public void An_empty_LocalPort_cell_means_the_same_port_and_a_port_outside_1_65535_is_refused()
    {
        // as Import-Csv gives a row without a local port
        var run = Run("[pscustomobject]@{ From = 'work'; To = 'personal'; Port = 22; LocalPort = '' } | Add-QubeTcpBinding -PassThru");
        run.AssertNoErrors();
        Assert.Equal(22, Assert.Single(run.Of<QubeTcpBinding>()).LocalPort);
        var refused = Run("Add-QubeTcpBinding -From work -To personal -Port 23 -LocalPort 65536");
        Assert.StartsWith("ParameterArgumentValidationError,", Assert.Single(refused.Errors).FullyQualifiedErrorId, StringComparison.Ordinal);
    }

    [Fact]
    public void Get_lists_and_filters_and_pipes_into_Remove()
    {
        Run("Add-QubeTcpBinding work personal 22 -Permanent; Add-QubeTcpBinding personal work 5432; Add-QubeTcpBinding work vault 8200").AssertNoErrors();
        var all = Run("Get-QubeTcpBinding").Of<QubeTcpBinding>().ToList();
        Assert.Equal(["personal -> work:5432", "work -> personal:22 (listening on 127.0.0.1:22 in work)", "work -> vault:8200"], all.Select(b => b.Text).Order(StringComparer.Ordinal));
        Assert.Equal(["work -> vault:8200"], Run("Get-QubeTcpBinding -From w* -To vault").Of<QubeTcpBinding>().Select(b => b.Text));
        Assert.Equal(["personal"], Run("Get-QubeTcpBinding -Port 5432").Of<QubeTcpBinding>().Select(b => b.From));
        Assert.Equal(["personal"], Run("'personal' | Get-QubeTcpBinding").Of<QubeTcpBinding>().Select(b => b.From));
        Assert.Equal(Fqid("QubeNotFound", "GetQubeTcpBinding"), Assert.Single(Run("Get-QubeTcpBinding -From nosuch").Errors).FullyQualifiedErrorId);

        var remove = Run("Get-QubeTcpBinding -From work | Remove-QubeTcpBinding -Confirm:$false -PassThru");
        remove.AssertNoErrors();
        Assert.Equal(2, remove.Of<QubeTcpBinding>().Count());
        Assert.Equal(["personal -> work:5432"], Run("Get-QubeTcpBinding").Of<QubeTcpBinding>().Select(b => b.Text));
        Assert.Equal("#!/bin/sh\n", StateFile("work", "/rw/config/rc.local"));
        Assert.Equal("deny", Decide("work", 22).Outcome);

        Run("Remove-QubeTcpBinding personal work 5432 -Confirm:$false").AssertNoErrors();
        Assert.Null(PolicyFile);
        Assert.Empty(Run("Get-QubeTcpBinding").Output);
    }

    [Fact]
    public void An_unreadable_feature_is_an_error_of_its_own_and_the_others_are_listed()
    {
        Run("Add-QubeTcpBinding work personal 22").AssertNoErrors();
        Run("Add-QubeTcpBinding personal work 5432").AssertNoErrors();
        // a hand-written feature with a bad value
        Run("Add-QubeTcpBinding personal vault 80").AssertNoErrors();
        SetFeatureByHand("personal", "qubesfirewall.tcp.vault.80", "localport=80 permanent=maybe");
        var run = Run("Get-QubeTcpBinding");
        Assert.Equal(Fqid("InvalidTcpBindingFeature", "GetQubeTcpBinding"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        Assert.Equal(2, run.Of<QubeTcpBinding>().Count());
        var remove = Run("Remove-QubeTcpBinding -From personal -To vault -Port 80 -Confirm:$false");
        remove.AssertNoErrors();
        Assert.Contains(remove.Warnings, w => w.Contains("cannot be read", StringComparison.Ordinal));
        Assert.Empty(Run("Get-QubeTcpBinding").Errors);
    }

    protected abstract void SetFeatureByHand(string qube, string name, string value);

    [Fact]
    public void WhatIf_changes_nothing_and_Verbose_shows_the_whole_plan()
    {
        var before = _root.Snapshot();
        var whatIf = Run("Add-QubeTcpBinding work personal 22 -Permanent -WhatIf");
        whatIf.AssertNoErrors();
        _root.AssertUnchanged(before);

        var run = Run("Add-QubeTcpBinding work personal 22 -LocalPort 2222 -Permanent -Verbose -Confirm:$false");
        run.AssertNoErrors();
        var plan = Assert.Single(run.Verbose, v => v.StartsWith("Add qubes.ConnectTCP binding work -> personal:22", StringComparison.Ordinal));
        Assert.Contains("1. work: set feature qubesfirewall.tcp.personal.22 = 'uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b localport=2222 permanent=yes'", plan);
        Assert.Contains("2. work: write /rw/config/rc.local", plan);
        Assert.Contains("3. work: run as root", plan);
        Assert.Contains("4. dom0: create /etc/qubes/policy.d/70-qubesfirewall.policy", plan);
        Assert.Contains("qubes.ConnectTCP +22 work @default allow target=personal", plan);
    }

    [Fact]
    public void Remove_asks_first_and_never_means_all()
    {
        Run("Add-QubeTcpBinding work personal 22").AssertNoErrors();
        var before = _root.Snapshot();
        var prompt = Run("Remove-QubeTcpBinding work personal 22");
        Assert.Contains(prompt.Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal) || e.Exception is System.Management.Automation.Host.HostException);
        _root.AssertUnchanged(before);
        var missing = Run("Remove-QubeTcpBinding -From work -Confirm:$false");
        Assert.NotEmpty(missing.Errors);
        _root.AssertUnchanged(before);
        Assert.Equal(Fqid("TcpBindingNotFound", "RemoveQubeTcpBinding"), Assert.Single(Run("Remove-QubeTcpBinding work personal 23 -Confirm:$false").Errors).FullyQualifiedErrorId);
    }

    [Fact]
    public void Conflicts_and_bad_requests_are_refused_with_their_ids_and_change_nothing()
    {
        Run("Add-QubeTcpBinding work personal 22 -LocalPort 2222 -Permanent").AssertNoErrors();
        var before = _root.Snapshot();
        foreach (var (script, id) in new[]
        {
            ("Add-QubeTcpBinding work vault 22", "TcpBindingConflict"),
            ("Add-QubeTcpBinding work vault 80 -LocalPort 2222 -Permanent", "LocalPortInUse"),
            ("Add-QubeTcpBinding work dom0 22", "Dom0NotAllowed"),
            ("Add-QubeTcpBinding work work 22", "SameQube"),
            ("Add-QubeTcpBinding work nosuch 22", "QubeNotFound"),
            ("Add-QubeTcpBinding work 'bad name' 22", "InvalidQubeName"),
        })
        {
            var run = Run(script);
            Assert.Equal(Fqid(id, "AddQubeTcpBinding"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        }
        Assert.NotEmpty(Run("Add-QubeTcpBinding work vault 0").Errors); // ValidateRange
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void A_user_deny_that_decides_first_is_a_warning()
    {
        File.WriteAllText(Path.Combine(PolicyDirectory, "30-user.policy"), "qubes.ConnectTCP * @anyvm @anyvm deny\n");
        var run = Run("Add-QubeTcpBinding personal work 5432");
        run.AssertNoErrors();
        Assert.Contains(run.Warnings, w => w.Contains("30-user.policy:1", StringComparison.Ordinal) && w.Contains("denies", StringComparison.Ordinal));
        Assert.Equal(("deny", "30-user.policy"), (Decide("personal", 5432).Outcome, Decide("personal", 5432).Rule!.File));
    }

    [Fact]
    public void Remove_completes_targets_and_ports_from_the_declarations()
    {
        Run("Add-QubeTcpBinding work personal 22; Add-QubeTcpBinding work vault 8200").AssertNoErrors();
        var run = Run("""
            $line = "Remove-QubeTcpBinding -From work -To "
            (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
            $line = "Remove-QubeTcpBinding -From work -To vault -Port "
            (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
            """);
        run.AssertNoErrors();
        Assert.Equal(["personal", "vault", "8200"], run.Output.Select(o => o.ToString()));
    }
}

/// <summary>The binding cmdlets on an offline root.</summary>
public sealed class OfflineTcpBindingCmdletTests : TcpBindingCmdletTests
{
    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    protected override void SetFeatureByHand(string qube, string name, string value) =>
        Engine.Formats.QubesXml.SetFeature(Path.Combine(_root.Path, "qubes.xml"), qube, name, value);

    [Fact]
    public void A_halted_client_gets_its_file_offline()
    {
        var run = Run("Add-QubeTcpBinding -From untrusted -To work -Port 444 -LocalPort 10444 -Permanent");
        run.AssertNoErrors();
        Assert.Contains("qubesfirewall-tcp-10444.socket", StateFile("untrusted", "/rw/config/rc.local"));
    }
}

/// <summary>The binding cmdlets on the live backend (stand-in qubesd, dom0's files under the root, stand-in qvm-run).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveTcpBindingCmdletTests : TcpBindingCmdletTests
{
    private readonly LiveStandIn _live;
    private readonly FakeQubesd _server;

    public LiveTcpBindingCmdletTests()
    {
        _live = new LiveStandIn(_root.Path, "qfw-tcp-");
        _server = _live.Server;
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override PsRun Run(string script) => PowerShellHost.Run(script, environment: _live.Environment);

    // qubesd keeps features in memory: a hand-made change goes through it, as qvm-features would.
    protected override void SetFeatureByHand(string qube, string name, string value)
    {
        using var backend = new Engine.AdminApi.AdminApiBackend(new Engine.AdminApi.QubesdClient(_server.SocketPath));
        backend.SetFeature(qube, name, value);
    }

    [Fact]
    public void Features_go_through_qubesd_and_files_in_qubes_through_qvm_run()
    {
        _server.ClearCalls();
        Run("Add-QubeTcpBinding work personal 22 -Permanent").AssertNoErrors();
        Assert.Equal(1, _server.CountCalls("admin.vm.feature.Set", "work"));
        var log = _live.QvmRunLog;
        Assert.Contains(log, l => l.StartsWith("work ", StringComparison.Ordinal) && l.Contains("cat --", StringComparison.Ordinal));
        Assert.Contains(log, l => l == "work exec /bin/sh -s 2>&1");
        Assert.NotNull(PolicyFile);
    }

    [Fact]
    public void A_halted_client_cannot_get_a_listener_but_can_get_the_policy()
    {
        var before = _root.Snapshot();
        var refused = Run("Add-QubeTcpBinding -From untrusted -To work -Port 444 -Permanent");
        Assert.Equal(Fqid("QubesNotRunning", "AddQubeTcpBinding"), Assert.Single(refused.Errors).FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
        Run("Add-QubeTcpBinding -From untrusted -To work -Port 444").AssertNoErrors();
        Assert.Equal("allow", Decide("untrusted", 444).Outcome);
    }

    [Fact]
    public void WhatIf_lists_what_would_be_sent_and_written()
    {
        var before = _root.Snapshot();
        var run = Run("Add-QubeTcpBinding work personal 22 -Permanent -WhatIf");
        run.AssertNoErrors();
        _root.AssertUnchanged(before);
        Assert.Contains(run.Information, i => i.Contains("admin.vm.feature.Set", StringComparison.Ordinal));
        Assert.Contains(run.Information, i => i.Contains("write /etc/qubes/policy.d/70-qubesfirewall.policy (dom0, mode 664)", StringComparison.Ordinal));
        Assert.Contains(run.Information, i => i.Contains("exec /bin/sh -s", StringComparison.Ordinal));
    }
}
