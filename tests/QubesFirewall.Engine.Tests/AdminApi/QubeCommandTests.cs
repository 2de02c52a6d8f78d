using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>
/// Files and scripts inside qubes through a stand-in qvm-run: the exact arguments, content only on
/// standard input, the fixed commands really run by sh, and rollouts that put failed chains back.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class QubeCommandTests : IDisposable
{
    private const string RcLocal = "/rw/config/rc.local";
    private const string FwScript = "/rw/config/qubes-firewall-user-script";
    private const UnixFileMode Executable = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    private AdminApiBackend Backend => _live.Backend;
    private StandInQvmRun QvmRun => _live.QvmRun;

    [Fact]
    public void Reading_runs_a_fixed_cat_with_nothing_on_stdin()
    {
        QvmRun.Put("work", RcLocal, "#!/bin/sh\necho hi\n");
        Assert.Equal("#!/bin/sh\necho hi\n", Backend.ReadQubeFile("work", RcLocal));
        var call = Assert.Single(QvmRun.Calls);
        Assert.Equal(["--pass-io", "--no-gui", "--no-autostart", "--no-filter-escape-chars", "--no-color-output", "-u", "root", "work",
            "if [ -e '/rw/config/rc.local' ]; then exec cat -- '/rw/config/rc.local'; else exit 3; fi"], call.Args);
        Assert.Empty(call.Stdin);
    }

    [Fact]
    public void A_missing_file_reads_as_null()
    {
        Assert.Null(Backend.ReadQubeFile("work", RcLocal));
    }

    [Fact]
    public void Content_travels_on_stdin_never_in_the_command_line()
    {
        var content = "#!/bin/sh\n# it's \"quoted\" $(not run) `nor this` ; rm -rf / \u00e9\nnft -f - <<'EOF'\nEOF\n";
        Backend.WriteQubeFile("sys-net", FwScript, content, Executable);
        var call = Assert.Single(QvmRun.Calls);
        Assert.Equal(Encoding.UTF8.GetBytes(content), call.Stdin);
        Assert.All(call.Args, a => Assert.DoesNotContain("not run", a));
        Assert.Equal(QubeFileCommands.Write(FwScript, Executable), call.Args[^1]);
        // The real fixed command ran: the file is there, whole, with its mode, and no temporary file is left.
        Assert.Equal(content, QvmRun.Read("sys-net", FwScript));
        Assert.Equal(Executable, File.GetUnixFileMode(QvmRun.FileOf("sys-net", FwScript)));
        Assert.Single(Directory.EnumerateFiles(Path.GetDirectoryName(QvmRun.FileOf("sys-net", FwScript))!));
        Assert.Equal(content, Backend.ReadQubeFile("sys-net", FwScript));
    }

    [Theory]
    [InlineData("/etc/passwd")]
    [InlineData("/rw/../etc/passwd")]
    [InlineData("/rw/config/a b")]
    [InlineData("/rw/config/it's")]
    [InlineData("/rw/config/$(reboot)")]
    [InlineData("/rw/config/-rf")]
    [InlineData("/rw/config/.hidden")]
    [InlineData("rw/config/rc.local")]
    [InlineData("/rw")]
    public void Paths_outside_the_grammar_are_refused_before_any_process(string path)
    {
        Assert.Equal("InvalidQubePath", Assert.Throws<QubesFirewallException>(() => Backend.WriteQubeFile("work", path, "x", Executable)).ErrorId);
        Assert.Equal("InvalidQubePath", Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("work", path)).ErrorId);
        Assert.Empty(QvmRun.Calls);
    }

    [Fact]
    public void A_script_runs_and_its_output_and_exit_code_come_back()
    {
        QvmRun.Put("sys-firewall", FwScript, "#!/bin/sh\necho applied\necho warn >&2\nexit 0\n", Executable);
        var result = Backend.RunQubeScript("sys-firewall", FwScript);
        Assert.True(result.Executed);
        Assert.True(result.Succeeded);
        Assert.Contains("applied", result.Output);
        Assert.Contains("warn", result.Output);
        Assert.Equal("exec '/rw/config/qubes-firewall-user-script' </dev/null 2>&1", QvmRun.Calls[0].Args[^1]);
    }

    [Fact]
    public void A_generated_script_runs_from_stdin()
    {
        var result = Backend.RunQubeShellScript("sys-net", "echo from stdin\nexit 4\n", "port forward web");
        Assert.Equal(4, result.ExitCode);
        Assert.Contains("from stdin", result.Output);
        var call = Assert.Single(QvmRun.Calls);
        Assert.Equal(QubeFileCommands.RunStandardInput, call.Args[^1]);
        Assert.Equal("echo from stdin\nexit 4\n"u8.ToArray(), call.Stdin);
    }

    [Fact]
    public void A_halted_qube_is_named_not_reported_as_exit_code_1()
    {
        QvmRun.Halt("untrusted");
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.WriteQubeFile("untrusted", RcLocal, "x", Executable));
        Assert.Equal("QubeNotRunning", ex.ErrorId);
        Assert.Contains("'untrusted'", ex.Message);
        Assert.Contains("halted", ex.Message);
    }

    [Fact]
    public void A_failing_command_reports_its_exit_code_and_error_output()
    {
        QvmRun.FailIn("work", "cat --");
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("work", RcLocal));
        Assert.Equal("QubeCommandFailed", ex.ErrorId);
        Assert.Contains("exited with code 7", ex.Message);
        Assert.Contains("boom in work", ex.Message);
    }

    [Fact]
    public void No_qvm_run_is_a_clear_error()
    {
        var backend = new AdminApiBackend(Backend.Client, new QvmRunCommandRunner(environment: n => n == "PATH" ? "/nonexistent" : null));
        Assert.Equal("QvmRunNotAvailable", Assert.Throws<QubesFirewallException>(() => backend.ReadQubeFile("work", RcLocal)).ErrorId);
    }

    // ------------------------------------------------------------------ rollouts

    private List<RolloutStep> Chain(params string[] vms) => vms.Select(vm =>
    {
        var previous = $"#!/bin/sh\necho previous {vm} >> /dev/null\n";
        QvmRun.Put(vm, FwScript, previous, Executable);
        return new RolloutStep(vm, FwScript, $"#!/bin/sh\necho new {vm}\n", previous, Executable, ApplyPath: FwScript);
    }).ToList();

    [Fact]
    public void A_rollout_applies_each_hop_in_order()
    {
        var steps = Chain("sys-net", "sys-firewall", "work");
        var result = new RolloutRunner(Backend).Run(steps);
        Assert.True(result.Succeeded);
        Assert.All(result.Steps, s => Assert.Equal(RolloutStepStatus.Applied, s.Status));
        foreach (var s in steps) Assert.Equal(s.NewContent, QvmRun.Read(s.VMName, FwScript));
        // Per hop: read (verify), write, run.
        Assert.Equal(9, QvmRun.Calls.Count);
        Assert.Equal(["sys-net", "sys-net", "sys-net", "sys-firewall", "sys-firewall", "sys-firewall", "work", "work", "work"], QvmRun.Calls.Select(c => c.Args[7]));
    }

    [Fact]
    public void One_failing_hop_stops_the_rollout_and_the_others_are_restored()
    {
        var steps = Chain("sys-net", "sys-firewall", "work", "personal");
        QvmRun.FailIn("work", "exec '/rw/config/qubes-firewall-user-script'");
        var progress = new List<RolloutStepResult>();
        var result = new RolloutRunner(Backend, new RolloutOptions { Progress = progress.Add }).Run(steps);
        Assert.False(result.Succeeded);
        Assert.Equal([RolloutStepStatus.RolledBack, RolloutStepStatus.RolledBack, RolloutStepStatus.Failed, RolloutStepStatus.NotAttempted], result.Steps.Select(s => s.Status));
        Assert.Contains("boom in work", result.Steps[2].Message);
        Assert.Contains("previous content was put back", result.Steps[2].Message);
        foreach (var s in steps) Assert.Equal(s.PreviousContent, QvmRun.Read(s.VMName, FwScript));
        Assert.DoesNotContain(QvmRun.Calls, c => c.Args[7] == "personal");
        // Restored hops ran their previous script again, last changed first.
        var runs = QvmRun.Calls.Where(c => c.Args[^1].StartsWith("exec '", StringComparison.Ordinal)).Select(c => c.Args[7]).ToList();
        Assert.Equal(["sys-net", "sys-firewall", "work", "work", "sys-firewall", "sys-net"], runs);
        Assert.Equal(result.Steps.Count, progress.Select(p => p.Step).Distinct().Count());
    }

    [Fact]
    public void A_file_changed_since_the_plan_stops_the_rollout()
    {
        var steps = Chain("sys-net", "sys-firewall");
        QvmRun.Put("sys-firewall", FwScript, "#!/bin/sh\n# edited by hand meanwhile\n", Executable);
        var result = new RolloutRunner(Backend).Run(steps);
        Assert.Equal([RolloutStepStatus.RolledBack, RolloutStepStatus.Failed], result.Steps.Select(s => s.Status));
        Assert.Contains("changed since it was read", result.Steps[1].Message);
        Assert.Equal("#!/bin/sh\n# edited by hand meanwhile\n", QvmRun.Read("sys-firewall", FwScript));
        Assert.Equal(steps[0].PreviousContent, QvmRun.Read("sys-net", FwScript));
    }

    [Fact]
    public void Halted_hops_are_refused_by_name_before_anything_changes()
    {
        var steps = Chain("sys-net", "sys-whonix", "anon-whonix");
        var ex = Assert.Throws<QubesFirewallException>(() => new RolloutRunner(Backend).Run(steps));
        Assert.Equal("QubesNotRunning", ex.ErrorId);
        Assert.Contains("sys-whonix (halted)", ex.Message);
        Assert.Contains("anon-whonix (halted)", ex.Message);
        Assert.DoesNotContain("sys-net", ex.Message);
        Assert.Contains("Nothing was changed", ex.Message);
        Assert.Empty(QvmRun.Calls);
    }

    [Fact]
    public void With_start_halted_hops_are_started_in_chain_order_then_changed()
    {
        var steps = Chain("sys-net", "sys-whonix", "anon-whonix");
        var result = new RolloutRunner(Backend, new RolloutOptions { StartHalted = true }).Run(steps);
        Assert.True(result.Succeeded);
        Assert.Equal(["sys-whonix", "anon-whonix"], result.StartedQubes);
        Assert.Equal(["sys-whonix", "anon-whonix"], _live.Server.Calls.Where(c => c.Method == "admin.vm.Start").Select(c => c.Destination));
    }

    [Fact]
    public void The_runner_works_the_same_on_an_offline_root()
    {
        var root = Path.Combine(_live.Directory, "offline");
        LiveQubesd.Copy(OfflineRootTests.SamplePath(), root);
        using var offline = new OfflineRoot(root);
        var steps = new List<RolloutStep>
        {
            new("sys-net", FwScript, "#!/bin/sh\necho a\n", null, Executable, FwScript),
            new("untrusted", RcLocal, "#!/bin/sh\necho b\n", null, Executable, RcLocal),
        };
        Assert.Equal("QubesNotRunning", Assert.Throws<QubesFirewallException>(() => new RolloutRunner(offline).Run(steps)).ErrorId);
        var result = new RolloutRunner(offline, new RolloutOptions { StartHalted = true }).Run(steps);
        Assert.True(result.Succeeded);
        Assert.Equal(["untrusted"], result.StartedQubes);
        Assert.Equal(PowerState.Running, offline.GetInventory().Get("untrusted").State);
        Assert.Equal("#!/bin/sh\necho b\n", offline.ReadQubeFile("untrusted", RcLocal));
    }
}
