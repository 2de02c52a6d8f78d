using System.Management.Automation.Language;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>Every .ps1 in the repository parses: a syntax error fails the build, not a user.</summary>
public class ScriptSyntaxTests
{
    public static TheoryData<string> Scripts()
    {
        var data = new TheoryData<string>();
        foreach (var path in ScriptPaths()) data.Add(path);
        return data;
    }

    private static IEnumerable<string> ScriptPaths() => RepoFiles.Relative("*.ps1");

    [Theory]
    [MemberData(nameof(Scripts))]
    public void Parses_without_errors(string relativePath)
    {
        Parser.ParseFile(Path.Combine(Repo.Root, relativePath), out _, out var errors);
        Assert.True(errors.Length == 0, string.Join(Environment.NewLine, errors.Select(e => $"{relativePath}:{e.Extent.StartLineNumber}: {e.Message}")));
    }

    [Fact]
    public void The_repository_has_scripts_to_check() =>
        Assert.Contains(Path.Combine("tests", "Pester", "Invoke-Tests.ps1"), ScriptPaths());
}
